// Proxy auto-config for school devices. The proxy serves its own, filled in from the config, at
// http://<gateway>:8080/proxy.pac and /wpad.dat (docs/install.md); this static one is for serving it
// elsewhere (Content-Type application/x-ns-proxy-autoconfig). Replace 10.0.0.1 with the gateway.
function FindProxyForURL(url, host) {
  // Local names and private addresses go direct (no DNS lookups here: they slow every page).
  if (isPlainHostName(host) || shExpMatch(host, "*.local") || shExpMatch(host, "10.*") ||
      shExpMatch(host, "192.168.*") || host == "127.0.0.1" || host == "localhost") {
    return "DIRECT";
  }
  // Everything else through schoolproxy. No DIRECT fallback: if the proxy is down, browsing stops
  // rather than going round the filter.
  return "PROXY 10.0.0.1:8080";
}
