"""On the school's gateway: how the proxy listens (explicit and transparent mode), the firewall rules that
send the LAN's web traffic to it, the installed layout, and ``schoolproxy doctor``'s checks."""
