// voxseg run report: a WebGL2 point viewer written for this page (no library, nothing fetched).
// Reads the JSON block #voxseg-data and, per scene, base64 blocks #scene<i>-<field> (lib/report/html.py):
// pos  uint16 [N*3]  xyz quantised over the scene's bounding box (bbox: [min xyz, max xyz], metres)
// rgb  uint8 [N*3]   the PLY's colour; pred / label uint8 or uint16 [N] (the top value = none);
// conf uint8 [N]     confidence * 255.
// Points come in random order: while the view moves only the first FAST_POINTS are drawn (a uniform
// subsample), the whole scene once it rests for REST_MS.
// Mouse: left drag orbits, right drag (or shift + left) pans, the wheel zooms.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("voxseg-data").textContent);
  var canvas = document.getElementById("voxseg-canvas");
  if (!canvas || !data.scenes.length) { return; }
  var status = document.getElementById("voxseg-status");
  var gl = canvas.getContext("webgl2", {preserveDrawingBuffer: true, antialias: false});
  if (!gl) {
    status.textContent = "This browser gives the page no WebGL2 context: the 3D viewer cannot draw.";
    document.body.dataset.viewer = "no-webgl2";
    return;
  }
  var FAST_POINTS = 250000, REST_MS = 200;
  var GREY = [150, 150, 150], RIGHT = [40, 170, 70], WRONG = [220, 40, 40];
  var RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function compile(type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) { throw new Error(gl.getShaderInfoLog(shader)); }
    return shader;
  }
  var program = gl.createProgram();
  gl.attachShader(program, compile(gl.VERTEX_SHADER, [
    "#version 300 es",
    "in vec3 aPos; in vec4 aColor;",
    "uniform mat4 uMVP; uniform vec3 uMin; uniform vec3 uSize; uniform float uPointSize;",
    "out vec3 vColor;",
    "void main() {",
    "  vColor = aColor.rgb;",
    "  gl_PointSize = uPointSize;",
    // hidden points (alpha 0) are moved outside the clip volume, so they cost no fragments
    "  gl_Position = aColor.a < 0.5 ? vec4(2.0, 2.0, 2.0, 1.0) : uMVP * vec4(uMin + aPos * uSize, 1.0);",
    "}"].join("\n")));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, [
    "#version 300 es",
    "precision mediump float; in vec3 vColor; out vec4 outColor;",
    "void main() { outColor = vec4(vColor, 1.0); }"].join("\n")));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) { throw new Error(gl.getProgramInfoLog(program)); }
  var loc = {pos: gl.getAttribLocation(program, "aPos"), color: gl.getAttribLocation(program, "aColor"),
             mvp: gl.getUniformLocation(program, "uMVP"), min: gl.getUniformLocation(program, "uMin"),
             size: gl.getUniformLocation(program, "uSize"), pointSize: gl.getUniformLocation(program, "uPointSize")};
  var posBuffer = gl.createBuffer(), colorBuffer = gl.createBuffer();
  var vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  gl.bindBuffer(gl.ARRAY_BUFFER, posBuffer);
  gl.enableVertexAttribArray(loc.pos);
  gl.vertexAttribPointer(loc.pos, 3, gl.UNSIGNED_SHORT, true, 0, 0);
  gl.bindBuffer(gl.ARRAY_BUFFER, colorBuffer);
  gl.enableVertexAttribArray(loc.color);
  gl.vertexAttribPointer(loc.color, 4, gl.UNSIGNED_BYTE, true, 0, 0);

  function decode(id, Type) {
    var node = document.getElementById(id);
    if (!node) { return null; }
    var text = atob(node.textContent.trim()), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    return new Type(bytes.buffer);
  }

  // ---- state ----
  var state = {scene: null, arrays: null, mode: "pred", hidden: {}, pointSize: 2.0,
               yaw: -0.9, pitch: 0.7, dist: 1, target: [0, 0, 0], frames: 0};

  function loadScene(index) {
    var s = data.scenes[index], key = "scene" + index + "-";
    var ClassType = s.class_dtype === "u2" ? Uint16Array : Uint8Array;
    state.scene = s;
    state.arrays = {pos: decode(key + "pos", Uint16Array), rgb: decode(key + "rgb", Uint8Array),
                    pred: decode(key + "pred", ClassType), label: decode(key + "label", ClassType),
                    conf: decode(key + "conf", Uint8Array)};
    gl.bindBuffer(gl.ARRAY_BUFFER, posBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, state.arrays.pos, gl.STATIC_DRAW);
    var lo = s.bbox[0], hi = s.bbox[1];
    state.target = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2];
    state.diag = Math.max(1e-3, Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]));
    state.dist = state.diag * 1.3;
    state.hidden = {};
    var modes = document.querySelectorAll("#voxseg-mode option");
    for (var m = 0; m < modes.length; m++) {
      modes[m].disabled = s.modes.indexOf(modes[m].value) < 0;
    }
    if (s.modes.indexOf(state.mode) < 0) { state.mode = s.modes[0]; }
    document.getElementById("voxseg-mode").value = state.mode;
    document.getElementById("voxseg-note").textContent = s.note;
    buildLegend();
    recolor();
  }

  function rampLUT() {
    // 256 confidence levels -> RGB, linear between the RAMP stops
    var lut = new Uint8Array(256 * 3);
    for (var v = 0; v < 256; v++) {
      var t = v / 255 * (RAMP.length - 1), j = Math.min(RAMP.length - 2, Math.floor(t)), f = t - j;
      for (var d = 0; d < 3; d++) { lut[3 * v + d] = Math.round(RAMP[j][d] * (1 - f) + RAMP[j + 1][d] * f); }
    }
    return lut;
  }
  var RAMP_LUT = rampLUT();

  function recolor() {
    // one lookup table per mode (class id -> RGB, `none` -> grey), so a million points take one pass
    var s = state.scene, A = state.arrays, n = s.n, out = new Uint8Array(n * 4), none = s.class_none;
    var palette = data.runs[s.run].palette, mode = state.mode, lut = new Uint8Array((none + 1) * 3);
    var hidden = new Uint8Array(none + 1), shownBy = mode === "gt" ? A.label : A.pred, i, k, src;
    for (k = 0; k <= none; k++) {
      var c = k < palette.length ? palette[k] : GREY;
      lut[3 * k] = c[0]; lut[3 * k + 1] = c[1]; lut[3 * k + 2] = c[2];
      hidden[k] = k !== none && state.hidden[k] ? 1 : 0;
    }
    for (i = 0; i < n; i++) {
      var o = 4 * i;
      if (mode === "rgb") {
        out[o] = A.rgb[3 * i]; out[o + 1] = A.rgb[3 * i + 1]; out[o + 2] = A.rgb[3 * i + 2];
      } else if (mode === "error") {
        src = A.label[i] === none ? GREY : A.label[i] === A.pred[i] ? RIGHT : WRONG;
        out[o] = src[0]; out[o + 1] = src[1]; out[o + 2] = src[2];
      } else if (mode === "confidence") {
        k = 3 * A.conf[i];
        out[o] = RAMP_LUT[k]; out[o + 1] = RAMP_LUT[k + 1]; out[o + 2] = RAMP_LUT[k + 2];
      } else {
        k = 3 * (mode === "gt" ? A.label[i] : A.pred[i]);
        out[o] = lut[k]; out[o + 1] = lut[k + 1]; out[o + 2] = lut[k + 2];
      }
      out[o + 3] = shownBy && hidden[shownBy[i]] ? 0 : 255;
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, colorBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, out, gl.STATIC_DRAW);
    requestDraw();
  }

  function buildLegend() {
    var s = state.scene, run = data.runs[s.run], list = document.getElementById("voxseg-legend");
    list.innerHTML = "";
    run.class_names.forEach(function (name, k) {
      var item = document.createElement("li"), iou = run.iou ? run.iou[k] : null;
      item.dataset.class = k;
      item.title = "click to hide or show " + name;
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = "rgb(" + run.palette[k].join(",") + ")";
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name + (iou === null || iou === undefined ? "" :
        "  " + (100 * iou).toFixed(1))));
      item.addEventListener("click", function () {
        state.hidden[k] = !state.hidden[k];
        item.classList.toggle("off", !!state.hidden[k]);
        recolor();
      });
      list.appendChild(item);
    });
  }

  // ---- matrices (column-major, as WebGL reads them) ----
  function perspective(fovy, aspect, near, far) {
    var f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
  }
  function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
  function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
  function norm(a) { var l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; }
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
  function lookAt(eye, target, up) {
    var z = norm(sub(eye, target)), x = norm(cross(up, z)), y = cross(z, x);
    return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
  }
  function multiply(a, b) {
    var out = new Array(16);
    for (var c = 0; c < 4; c++) {
      for (var r = 0; r < 4; r++) {
        var v = 0;
        for (var k = 0; k < 4; k++) { v += a[k * 4 + r] * b[c * 4 + k]; }
        out[c * 4 + r] = v;
      }
    }
    return out;
  }
  function eye() {
    var cp = Math.cos(state.pitch);
    return [state.target[0] + state.dist * cp * Math.cos(state.yaw), state.target[1] + state.dist * cp * Math.sin(state.yaw),
            state.target[2] + state.dist * Math.sin(state.pitch)];
  }

  var pending = false;
  function requestDraw() {
    if (!pending) { pending = true; requestAnimationFrame(draw); }
  }
  function draw() {
    pending = false;
    var s = state.scene, w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.enable(gl.DEPTH_TEST);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    var proj = perspective(Math.PI / 4, canvas.width / Math.max(1, canvas.height), state.dist * 0.01,
                           state.dist * 4 + state.diag * 2);
    var mvp = multiply(proj, lookAt(eye(), state.target, [0, 0, 1]));
    var lo = s.bbox[0], hi = s.bbox[1];
    gl.useProgram(program);
    gl.uniformMatrix4fv(loc.mvp, false, new Float32Array(mvp));
    gl.uniform3f(loc.min, lo[0], lo[1], lo[2]);
    gl.uniform3f(loc.size, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]);
    gl.uniform1f(loc.pointSize, state.pointSize * dpr);
    gl.bindVertexArray(vao);
    // while the view moves, draw the first FAST_POINTS points only: the page stores points in random
    // order, so they are a uniform subsample; the whole set is drawn once the view rests
    var count = state.moving ? Math.min(s.n, FAST_POINTS) : s.n;
    gl.drawArrays(gl.POINTS, 0, count);
    document.body.dataset.drawn = count;
    state.frames += 1;
    if (state.frames === 1) {
      var probe = new Uint8Array(4);
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);  // waits until the frame is drawn
      document.body.dataset.firstFrameMs = performance.now().toFixed(1);
    }
    document.body.dataset.frames = state.frames;
    document.body.dataset.mode = state.mode;
  }

  // ---- controls ----
  var drag = null, restTimer = null;
  function moved() {
    state.moving = true;
    clearTimeout(restTimer);
    restTimer = setTimeout(function () { state.moving = false; requestDraw(); }, REST_MS);
    requestDraw();
  }
  canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
  canvas.addEventListener("mousedown", function (e) {
    drag = {x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey};
  });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) {
      var forward = norm(sub(state.target, eye())), right = norm(cross(forward, [0, 0, 1])), up = cross(right, forward);
      var scale = state.dist / canvas.clientHeight;
      for (var d = 0; d < 3; d++) { state.target[d] += (-dx * right[d] + dy * up[d]) * scale; }
    } else {
      state.yaw -= dx * 0.008;
      state.pitch = Math.max(-1.55, Math.min(1.55, state.pitch + dy * 0.008));
    }
    moved();
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    state.dist = Math.max(state.diag * 0.02, Math.min(state.diag * 20, state.dist * Math.exp(e.deltaY * 0.001)));
    moved();
  }, {passive: false});
  document.getElementById("voxseg-mode").addEventListener("change", function (e) {
    state.mode = e.target.value; recolor();
  });
  document.getElementById("voxseg-size").addEventListener("input", function (e) {
    state.pointSize = parseFloat(e.target.value); requestDraw();
  });
  document.getElementById("voxseg-scene").addEventListener("change", function (e) {
    loadScene(parseInt(e.target.value, 10));
  });
  window.addEventListener("resize", requestDraw);
  loadScene(0);
})();
