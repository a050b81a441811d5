"""The addon script a network manager can pass to mitmdump directly:

    mitmdump -s addons/schoolproxy.py --set schoolproxy_config=config/schoolproxy.yaml

(``schoolproxy run`` does the same with sensible defaults.) All logic lives in the package.
"""

from schoolproxy.proxy import make_addons

addons = make_addons()
