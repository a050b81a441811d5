// The safeguarding console's only script: copy buttons, and leaving the page when the session has timed
// out so a screen left on shows nothing. No inline scripts anywhere (the Content-Security-Policy forbids them).
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var box = document.getElementById(button.getAttribute("data-copy"));
    if (!box) return;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy summary"; }, 2500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(box.value).then(done, function () { box.select(); });
    } else {
      box.select();
      if (document.execCommand("copy")) done();
    }
  });
  var idle = parseInt(document.body.getAttribute("data-idle-seconds") || "0", 10);
  if (idle > 0) {
    setTimeout(function () {
      window.location.assign(document.body.getAttribute("data-signin") + "?why=idle");
    }, (idle + 5) * 1000);
  }
})();
