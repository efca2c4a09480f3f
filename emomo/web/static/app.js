// The search page: the query lives in the URL (/?q=…&category=…&animated=…), so a search can
// be shared, bookmarked and reloaded; the API answers it and the grid shows the memes.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["q", "category", "animated"];

function paramsFromUrl() {
  const url = new URLSearchParams(location.search);
  return Object.fromEntries(FIELDS.map((f) => [f, url.get(f) || ""]));
}

function fillForm(params) {
  for (const f of FIELDS) $(f).value = params[f];
}

function memeText(hit) {
  // The describer's text is "图中文字：…。标签：…" on the embedded path; a VLM writes prose.
  const m = /图中文字：([^。]*)/.exec(hit.description || "");
  return m ? m[1] : (hit.description || "");
}

function card(hit) {
  const figure = document.createElement("figure");
  figure.className = hit.match;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  // The grid loads thumbnails (the first frame, small); a click shows the whole file (a GIF
  // plays) and copies its address.
  img.src = hit.thumb_url || hit.image_url;
  img.alt = memeText(hit);
  const caption = document.createElement("figcaption");
  caption.textContent = memeText(hit);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = [hit.category_name, hit.is_animated ? "动图" : ""].filter(Boolean).join(" · ");
  caption.appendChild(meta);
  figure.append(img, caption);
  figure.title = "点击查看原图并复制图片地址";
  figure.addEventListener("click", () => {
    img.src = hit.image_url;
    copy(new URL(hit.image_url, location.href).href);
  });
  return figure;
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("已复制图片地址");
  } catch {
    window.prompt("复制图片地址", text);
  }
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 1500);
}

// Each search, by words or by picture, is numbered: an answer that comes after a later search
// began (a slow server, a filter changed while the page's first search was out) is dropped, not
// shown over the later one's.
let searches = 0;

async function run(params) {
  const mine = ++searches;
  const grid = $("grid");
  grid.replaceChildren();
  if (!params.q) {
    $("status").textContent = "输入一种心情，比如：我太难了、开心、无语";
    return;
  }
  $("status").textContent = "搜索中…";
  const query = new URLSearchParams({ q: params.q, top: "48" });
  if (params.category) query.set("category", params.category);
  if (params.animated) query.set("animated", params.animated);
  const response = await fetch(`/api/v1/search?${query}`);
  const body = await response.json();
  if (mine !== searches) return;
  if (!response.ok) {
    $("status").textContent = body.error || `出错了（${response.status}）`;
    return;
  }
  // Honest about why each meme is there: its text holds the query, or only its meaning is near.
  const written = body.filter((hit) => hit.match === "text").length;
  $("status").textContent = !body.length ? "没有找到表情包"
    : !written ? "没有文字完全匹配的表情包，以下是意思相近的"
    : written === body.length ? `${written} 个表情包写着“${params.q}”`
    : `${written} 个表情包写着“${params.q}”，其后是意思相近的`;
  grid.append(...body.map(card));
}

// Search by picture: a file chosen or dropped anywhere on the page. The meme it is comes first.
async function searchPicture(file) {
  const mine = ++searches;
  const grid = $("grid");
  grid.replaceChildren();
  $("status").textContent = "按图片搜索中…";
  const form = new FormData();
  form.append("image", file);
  const response = await fetch("/api/v1/search/image?top=48", { method: "POST", body: form });
  const body = await response.json();
  if (mine !== searches) return;
  if (!response.ok) {
    $("status").textContent = body.error || `出错了（${response.status}）`;
    return;
  }
  $("status").textContent = !body.length ? "没有找到表情包"
    : body[0].match === "picture" ? "就是这张表情包；其后是文字或意思相近的"
    : "没有找到这张表情包，以下是文字或意思相近的";
  grid.append(...body.map(card));
}

$("picture").addEventListener("change", () => {
  const [file] = $("picture").files;
  if (file) searchPicture(file);
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  const [file] = event.dataTransfer.files;
  if (file) searchPicture(file);
});

async function loadCategories(selected) {
  try {
    const response = await fetch("/api/v1/categories");
    const found = await response.json();
    for (const { category, name, memes } of found) {
      const option = new Option(`${name}（${memes}）`, category);
      $("category").add(option);
    }
  } catch {
    // the filter stays at "all"; the search itself still works
  }
  $("category").value = selected;
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = Object.fromEntries(FIELDS.map((f) => [f, $(f).value.trim()]));
  const url = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  history.pushState(null, "", url.toString() ? `/?${url}` : "/");
  run(params);
});
for (const id of ["category", "animated"]) {
  $(id).addEventListener("change", () => $("search").requestSubmit());
}
window.addEventListener("popstate", () => {
  const params = paramsFromUrl();
  fillForm(params);
  run(params);
});

const initial = paramsFromUrl();
fillForm(initial);
loadCategories(initial.category);
run(initial);
