// Upload page: send the chosen photo to /api/detect, then draw each face's box over it and list the faces.
"use strict";

const input = document.getElementById("file");
const statusLine = document.getElementById("status");
const photo = document.getElementById("photo");
const boxes = document.getElementById("boxes");
const rows = document.querySelector("#faces tbody");

function setStatus(text, state) {
  statusLine.textContent = text;
  statusLine.dataset.state = state;
}

function pct(value, total) {
  return (100 * value / total).toFixed(3) + "%";
}

function attr(a) {
  return `${a.label} (${a.prob.toFixed(2)})`;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function show(result) {
  boxes.replaceChildren();
  rows.replaceChildren();
  result.faces.forEach((face, i) => {
    const [x0, y0, x1, y1] = face.box;
    const box = document.createElement("div");
    box.className = `box ${face.mask.label}` + (y0 / result.height < 0.08 ? " top" : "");
    box.style.left = pct(x0, result.width);
    box.style.top = pct(y0, result.height);
    box.style.width = pct(x1 - x0, result.width);
    box.style.height = pct(y1 - y0, result.height);
    const label = document.createElement("span");
    label.textContent = `${i + 1}: ${face.mask.label}, ${face.gender.label}, ${face.age.label}`;
    box.appendChild(label);
    boxes.appendChild(box);

    const row = document.createElement("tr");
    row.className = face.mask.label;
    cell(row, String(i + 1));
    cell(row, attr(face.mask));
    cell(row, attr(face.gender));
    cell(row, attr(face.age));
    cell(row, `${face.label} (${face.prob.toFixed(2)})`);
    cell(row, face.score === null ? "-" : face.score.toFixed(2));
    cell(row, face.box.map(Math.round).join(", "));
    rows.appendChild(row);
  });
  const n = result.faces.length;
  setStatus(`${result.filename}: ${result.width}x${result.height}, ${n} face${n === 1 ? "" : "s"} found.`, "done");
}

async function upload(file) {
  setStatus(`Looking for faces in ${file.name}...`, "busy");
  boxes.replaceChildren();
  rows.replaceChildren();
  photo.src = URL.createObjectURL(file);
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("/api/detect", { method: "POST", body });
    const result = await response.json();
    if (!response.ok) {
      setStatus(`Error ${response.status}: ${result.error}`, "error");
      return;
    }
    show(result);
  } catch (err) {
    setStatus(`Error: ${err}`, "error");
  }
}

input.addEventListener("change", () => {
  if (input.files.length) upload(input.files[0]);
});
