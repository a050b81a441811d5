"""The addon script a network manager can pass to mitmdump directly:

    mitmdump -s addons/schoolproxy_addons.py --set schoolproxy_config=config/schoolproxy.yaml

(``schoolproxy run`` does the same, faster, with a lean master.) All logic lives in the package.
Not named schoolproxy.py: mitmdump puts this folder on sys.path, and that name would hide the package.
"""

from schoolproxy.proxy import make_addons

addons = make_addons()
