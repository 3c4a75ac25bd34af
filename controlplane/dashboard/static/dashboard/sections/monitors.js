/*
 * Monitor rule forms: show only the parameter inputs of the chosen kind.
 *
 * Each parameter input's wrapper names the kinds using it (data-kinds="min_items min_pages");
 * the inputs of other kinds are hidden and disabled, so they are not sent. Without this script
 * every input shows, and the server reads only the chosen kind's.
 */
(function () {
  "use strict";

  function follow(select) {
    var form = select.form;
    if (!form) return;
    var kind = select.value;
    Array.prototype.forEach.call(form.querySelectorAll("[data-kinds]"), function (wrapper) {
      var used = wrapper.getAttribute("data-kinds").split(" ").indexOf(kind) !== -1;
      wrapper.hidden = !used;
      Array.prototype.forEach.call(wrapper.querySelectorAll("input, select"), function (input) {
        input.disabled = !used;
      });
    });
  }

  function setUp() {
    Array.prototype.forEach.call(document.querySelectorAll("select[data-monitor-kind]"), function (select) {
      if (select.dataset.monitorReady) return;
      select.dataset.monitorReady = "yes";
      select.addEventListener("change", function () { follow(select); });
      follow(select);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
