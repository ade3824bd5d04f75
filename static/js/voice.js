// SafeFace voice pages: each slider shows its value as it moves, and the before/after players
// take turns (playing one pauses the other and carries on from the same moment). The upload
// form, drop zone and delete confirmations come from swaps.js. No inline script (the CSP).
(function () {
  "use strict";

  function setupSliders(root) {
    root.querySelectorAll("input[data-slider]").forEach(function (slider) {
      if (slider.dataset.ready) return;
      slider.dataset.ready = "1";
      var form = slider.form || document;
      var output = form.querySelector('[data-slider-value="' + slider.dataset.slider + '"]');
      function show() { if (output) output.textContent = slider.value; }
      slider.addEventListener("input", show);
      show();
    });
  }

  function setupAbPlayers(root) {
    root.querySelectorAll("[data-ab-players]").forEach(function (group) {
      if (group.dataset.ready) return;
      group.dataset.ready = "1";
      var players = Array.prototype.slice.call(group.querySelectorAll("audio"));
      players.forEach(function (player) {
        player.addEventListener("play", function () {
          players.forEach(function (other) {
            if (other === player || other.paused) return;
            var at = other.currentTime;
            other.pause();
            if (isFinite(at) && at < (player.duration || Infinity)) player.currentTime = at;
          });
        });
      });
    });
  }

  function init(root) {
    setupSliders(root);
    setupAbPlayers(root);
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt.parentElement || document); });
})();
