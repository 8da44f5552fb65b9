// The demo page: send the chosen file to /api/predict, draw it with the face box, show the bars.
// Every text from the server or the user goes through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
// The server's limit, and how a photo over it is sent: at SEND_SIDE on its longest side, as a JPEG at
// the first quality that fits. Written once, in inference/page_upload.py, which `fixmatch predict` follows.
const MAX_BYTES = Number(document.body.dataset.uploadLimit);
const SEND_SIDE = Number(document.body.dataset.sendSide);
const SEND_QUALITIES = document.body.dataset.sendQualities.split(" ").map(Number);
const PREVIEW_SIDE = 480;  // the preview's longest side in canvas pixels
const FACES = document.body.dataset.preprocess === "face";
const NOUN = document.body.dataset.noun || "Prediction";

function showError(message) {
  $("error").textContent = message.charAt(0).toUpperCase() + message.slice(1);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// A file over the server's limit (a phone photo: 4000x3000, 3-5 MB) is redrawn at SEND_SIDE and
// sent as a JPEG of a few hundred KB. The browser applies the EXIF orientation when drawing, so the
// copy is upright. Anything the browser cannot draw is sent as it is, for the server to judge.
async function shrinkIfTooLarge(file) {
  if (file.size <= MAX_BYTES) return file;
  let img;
  try {
    img = await loadImage(file);
  } catch (e) {
    return file;
  }
  const scale = Math.min(1, SEND_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(img.src);
  for (const quality of SEND_QUALITIES) {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
    if (blob && blob.size <= MAX_BYTES) return new File([blob], "photo.jpg", { type: "image/jpeg" });
  }
  return file;
}

async function predict(original) {
  clearError();
  $("result").hidden = true;
  const file = await shrinkIfTooLarge(original);
  const body = new FormData();
  body.append("file", file);
  let response;
  try {
    response = await fetch("/api/predict", { method: "POST", body });
  } catch (e) {
    showError("Could not reach the server (" + e.message + "). Check your connection and try again.");
    return;
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    showError("The server answered " + response.status + " without a readable result.");
    return;
  }
  if (!response.ok) {
    showError(data.error || "The server refused the image (" + response.status + ").");
    return;
  }
  await showResult(file, data);
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = URL.createObjectURL(file);
  });
}

async function drawPreview(file, data) {
  const img = await loadImage(file);
  const canvas = $("preview");
  // drawn PREVIEW_SIDE px on its longest side, small images enlarged too (a 48 px face would
  // otherwise sit as a speck beside the scores); enlarged a lot, its pixels are shown as squares
  const scale = PREVIEW_SIDE / Math.max(img.naturalWidth, img.naturalHeight);
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale < 2;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(img.src);
  if (data.box) {
    // the box is in the pixels of the upright (EXIF-rotated) image, which is what the browser draws
    const k = canvas.width / data.image_size[0];
    const [x, y, w, h] = data.box.map((v) => v * k);
    ctx.lineWidth = Math.max(2, canvas.width / 160);
    ctx.strokeStyle = "#00e676";
    ctx.strokeRect(x, y, w, h);
  }
}

function drawBars(probabilities, label) {
  const list = $("bars");
  list.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const item = document.createElement("li");
    item.className = name === label ? "bar top" : "bar";
    const title = document.createElement("span");
    title.className = "name";
    title.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    item.append(title, track, value);
    list.append(item);
  }
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

// The headline is the model's answer only when its input is what it was trained on: for a face
// model, a face. Without one the headline says so and the centre crop's scores are shown dimmed.
function showHeadline(data) {
  const headline = $("headline");
  const noFace = FACES && !data.face_found;
  headline.replaceChildren();
  headline.className = noFace ? "label none" : "label";
  if (noFace) {
    headline.textContent = "No face found";
  } else {
    const strong = document.createElement("strong");
    strong.id = "label";
    strong.textContent = data.label;
    headline.append(NOUN + ": ", strong, " (" + percent(data.confidence) + ")");
  }
  const note = $("face-note");
  note.hidden = !FACES;
  note.textContent = !FACES ? "" : data.face_found
    ? "Face found (green box)."
    : "Try a photo with a clear, frontal face. Below, for reference only: the scores of the centre of " +
      "the photo (top: " + data.label + ", " + percent(data.confidence) + "), which is not a face and says little.";
  note.className = data.face_found ? "note" : "note warn";
  $("bars").className = noFace ? "bars secondary" : "bars";
}

async function showResult(file, data) {
  showHeadline(data);
  drawBars(data.probabilities, data.label);
  $("timing").textContent = "Server time: " + data.ms.total.toFixed(1) + " ms";
  $("result").hidden = false;
  try {
    await drawPreview(file, data);
  } catch (e) {
    showError("Classified, but the preview failed: " + e.message + ".");
  }
}

function describeCard(card) {
  // the headline figures only: the name, every top-level accuracy, the stated limits
  const parts = card.name ? [card.name] : [];
  for (const [key, value] of Object.entries(card)) {
    if (typeof value === "number" && key.includes("accuracy")) {
      parts.push(key.replace(/_/g, " ") + " " + (100 * value).toFixed(1) + "%");
    }
  }
  if (card.limits) parts.push("limits: " + card.limits);
  return parts.join(" · ");
}

async function showModelCard() {
  try {
    const info = await (await fetch("/api/model")).json();
    if (info.card) $("card").textContent = "Model card: " + describeCard(info.card);
  } catch (e) {
    // the card is decoration; the demo works without it
  }
}

function pick(files) {
  if (files.length !== 1) {
    showError("Drop one image at a time.");
    return;
  }
  predict(files[0]);
}

$("file").addEventListener("change", (e) => {
  if (e.target.files.length) pick(e.target.files);
  e.target.value = "";  // choosing the same file again still triggers a new prediction
});
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  pick(e.dataTransfer.files);
});
showModelCard();
