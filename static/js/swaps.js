// SafeFace swaps pages: drag-and-drop upload with a progress bar, face boxes over the photo,
// the before/after slider, linked video players and delete confirmations. No inline script or
// style (the CSP forbids both): positions are set through the CSSOM from data attributes.
(function () {
  "use strict";

  function setupUploadForm(form) {
    if (form.dataset.ready) return;
    form.dataset.ready = "1";
    var input = form.querySelector("input[type=file]");
    var zone = form.querySelector("[data-drop-zone]");
    var nameOut = form.querySelector("[data-file-name]");
    var clientError = form.querySelector("[data-client-error]");
    var progressBox = form.querySelector("[data-upload-progress]");
    var bar = progressBox && progressBox.querySelector("progress");
    var barText = progressBox && progressBox.querySelector("[data-upload-progress-text]");
    var maxBytes = parseInt(form.dataset.maxBytes || "0", 10);

    function showError(message) {
      clientError.textContent = message;
      clientError.classList.toggle("hidden", !message);
    }
    function chosen() {
      var file = input.files && input.files[0];
      showError("");
      nameOut.textContent = file ? file.name + " (" + (file.size / 1048576).toFixed(1) + " MB)" : "";
      if (file && maxBytes && file.size > maxBytes) {
        showError("This file is " + (file.size / 1048576).toFixed(1) + " MB; the largest file accepted is " + form.dataset.maxHuman + ".");
        return false;
      }
      return true;
    }
    input.addEventListener("change", chosen);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("border-brand-500", "bg-brand-50");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.remove("border-brand-500", "bg-brand-50");
      });
    });
    zone.addEventListener("drop", function (event) {
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      chosen();
    });
    form.addEventListener("submit", function (event) {
      if (!chosen()) { event.preventDefault(); event.stopImmediatePropagation(); }
    }, true);
    form.addEventListener("htmx:confirm", function (event) {
      if (!chosen()) event.preventDefault();
    });
    form.addEventListener("htmx:xhr:progress", function (event) {
      if (!event.detail.lengthComputable || !bar) return;
      var percent = Math.round((100 * event.detail.loaded) / event.detail.total);
      progressBox.classList.remove("hidden");
      bar.value = percent;
      bar.textContent = percent + "%";
      barText.textContent = percent < 100 ? "Uploading… " + percent + "%" : "Upload complete; checking the file…";
    });
  }

  function placeBoxes(root) {
    root.querySelectorAll("[data-box-left]").forEach(function (box) {
      box.style.setProperty("left", box.dataset.boxLeft + "%");
      box.style.setProperty("top", box.dataset.boxTop + "%");
      box.style.setProperty("width", box.dataset.boxWidth + "%");
      box.style.setProperty("height", box.dataset.boxHeight + "%");
    });
  }

  function setupCompare(root) {
    root.querySelectorAll("[data-compare]").forEach(function (compare) {
      if (compare.dataset.ready) return;
      compare.dataset.ready = "1";
      var range = compare.querySelector("[data-compare-range]");
      function update() { compare.style.setProperty("--split", range.value + "%"); }
      range.addEventListener("input", update);
      update();
    });
  }

  function setupVideoSync(root) {
    root.querySelectorAll("[data-sync-videos]").forEach(function (group) {
      if (group.dataset.ready) return;
      group.dataset.ready = "1";
      var videos = Array.prototype.slice.call(group.querySelectorAll("video"));
      var syncing = false;
      videos.forEach(function (video) {
        function follow(action) {
          return function () {
            if (syncing) return;
            syncing = true;
            videos.forEach(function (other) {
              if (other === video) return;
              if (Math.abs(other.currentTime - video.currentTime) > 0.15) other.currentTime = video.currentTime;
              if (action === "play" && other.paused) other.play().catch(function () {});
              if (action === "pause" && !other.paused) other.pause();
            });
            syncing = false;
          };
        }
        video.addEventListener("play", follow("play"));
        video.addEventListener("pause", follow("pause"));
        video.addEventListener("seeked", follow("seek"));
      });
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  function init(root) {
    root.querySelectorAll("[data-upload-form]").forEach(setupUploadForm);
    placeBoxes(root);
    setupCompare(root);
    setupVideoSync(root);
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt.parentElement || document); });
})();
