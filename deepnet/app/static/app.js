// deepnet serve: draw on the pad; after every stroke, POST it as a PNG to /inspect and show
// the probabilities, the 28x28 input and the feature maps that come back.
"use strict";

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const label = document.getElementById("label");
const statusLine = document.getElementById("status");
const bars = document.getElementById("bars");
const STROKE_WIDTH = 20; // pixels of the 280-pixel pad: about MNIST's stroke once scaled to 20x20

let drawing = null; // the pointer drawing now: {id, x, y}
let inFlight = false; // a request is on its way
let again = false; // the picture changed while it was
let cleared = 0; // how often the pad was cleared: answers about an older picture are dropped

// -- the pad -------------------------------------------------------------------------

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  pen.strokeStyle = "#000";
  pen.fillStyle = "#000";
  pen.lineWidth = STROKE_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {x: (event.clientX - box.left) * pad.width / box.width,
          y: (event.clientY - box.top) * pad.height / box.height};
}

pad.addEventListener("pointerdown", (event) => {
  if (drawing) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const p = padPoint(event);
  drawing = {id: event.pointerId, x: p.x, y: p.y};
  pen.beginPath(); // a dot, so that a tap leaves a mark
  pen.arc(p.x, p.y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
  pen.fill();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  // Coalesced events: every point a fast pen passed, not only one per frame.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) {
    const p = padPoint(e);
    pen.beginPath();
    pen.moveTo(drawing.x, drawing.y);
    pen.lineTo(p.x, p.y);
    pen.stroke();
    drawing.x = p.x;
    drawing.y = p.y;
  }
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing = null;
  read();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  cleared++;
  again = false;
  label.textContent = "\u2013";
  showBars(new Array(10).fill(0), -1);
  document.getElementById("input").getContext("2d").clearRect(0, 0, 28, 28);
  document.getElementById("feature-maps").replaceChildren();
  setStatus("");
});

// -- asking the server ---------------------------------------------------------------

function read() {
  if (inFlight) { again = true; return; } // one request at a time; the newest picture wins
  inFlight = true;
  setStatus("reading\u2026");
  const picture = cleared;
  pad.toBlob(async (png) => {
    try {
      const response = await fetch("/inspect", {method: "POST", headers: {"Content-Type": "image/png"}, body: png});
      const answer = await response.json();
      if (response.status === 503 && picture === cleared) {
        // The server is busy: say so, and ask again after its Retry-After (the newest picture).
        setStatus(answer.error, true);
        await new Promise((resolve) => setTimeout(resolve, 1000 * retryAfter(response)));
        again = again || picture === cleared;
        return;
      }
      if (!response.ok) throw new Error(answer.error || response.statusText);
      if (picture === cleared) show(answer);
      setStatus("");
    } catch (error) {
      setStatus(error.message, true);
    } finally {
      inFlight = false;
      if (again) { again = false; read(); }
    }
  }, "image/png");
}

// Seconds to wait before asking again: the answer's Retry-After, within 1..30.
function retryAfter(response) {
  return Math.min(30, Math.max(1, Number(response.headers.get("Retry-After")) || 1));
}

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

// -- showing the answer --------------------------------------------------------------

function show(answer) {
  label.textContent = String(answer.label);
  showBars(answer.probabilities, answer.label);
  drawGray(document.getElementById("input"), bytes(answer.input), 0, 28, 28);
  showLayers(answer.layers);
}

function showBars(probabilities, top) {
  if (!bars.children.length) {
    for (let digit = 0; digit < 10; digit++) {
      const row = document.createElement("li");
      row.innerHTML = `<span>${digit}</span><span class="track"><span class="bar"></span></span><span class="percent"></span>`;
      bars.appendChild(row);
    }
  }
  probabilities.forEach((p, digit) => {
    const row = bars.children[digit];
    row.classList.toggle("top", digit === top);
    row.querySelector(".bar").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".percent").textContent = `${(100 * p).toFixed(1)}%`;
  });
}

function showLayers(layers) {
  const holder = document.getElementById("feature-maps");
  if (holder.children.length !== layers.length) {
    holder.replaceChildren(...layers.map((layer) => {
      const [channels, height, width] = layer.shape;
      const figure = document.createElement("figure");
      const caption = document.createElement("figcaption");
      caption.textContent = `${layer.name}: ${channels} maps of ${height}\u00d7${width}`;
      figure.appendChild(caption);
      const grid = document.createElement("div");
      grid.className = "maps";
      figure.appendChild(fillGrid(grid, channels, height, width, 48));
      return figure;
    }));
  }
  layers.forEach((layer, i) => {
    const [channels, height, width] = layer.shape;
    const pixels = bytes(layer.pixels);
    const canvases = holder.children[i].querySelectorAll("canvas");
    for (let c = 0; c < channels; c++) drawGray(canvases[c], pixels, c * height * width, height, width);
  });
}

// Fill `grid` with `count` canvases of height x width pixels, each about `size` CSS pixels wide.
function fillGrid(grid, count, height, width, size) {
  const zoom = Math.max(1, Math.round(size / width));
  for (let c = 0; c < count; c++) {
    const canvas = document.createElement("canvas");
    canvas.className = "map";
    canvas.width = width;
    canvas.height = height;
    canvas.style.width = `${width * zoom}px`;
    canvas.style.height = `${height * zoom}px`;
    grid.appendChild(canvas);
  }
  return grid;
}

function drawGray(canvas, pixels, offset, height, width) {
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const v = pixels[offset + i];
    image.data.set([v, v, v, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

function bytes(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

async function showFilters() {
  try {
    const response = await fetch("/filters");
    const filters = await response.json();
    const [count, height, width] = filters.shape;
    const grid = fillGrid(document.getElementById("filters"), count, height, width, 24);
    const pixels = bytes(filters.pixels);
    grid.querySelectorAll("canvas").forEach((canvas, c) => drawGray(canvas, pixels, c * height * width, height, width));
  } catch (error) {
    setStatus(`filters: ${error.message}`, true);
  }
}

clearPad();
showBars(new Array(10).fill(0), -1);
showFilters();
