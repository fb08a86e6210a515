"""``qubus dashboard``: a live page of the stack (fleet, flow, tasks, a task's trace, weights)
and the Prometheus ``/metrics`` of every service, served with aiohttp (``server``) from what
it reads on the bus (``state``, ``scrape``); the page is plain ES modules in ``static/``."""
