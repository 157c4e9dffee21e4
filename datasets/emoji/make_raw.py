"""Writes the emoji dataset's raw lists from the npm packages' data:
images.jsonl (id, file, group, subgroup) and captions.jsonl (id, image_id, text).

Every Noto emoji with a 64x64 Google image is an image; its captions are the CLDR
name ("nerd face"), its CLDR keywords ("brainy, clever, expert, ..."), and its
Slack-style short names when they differ from the name.
Usage: make_raw.py EMOJI_DATASOURCE_PACKAGE EMOJIBASE_PACKAGE OUT_DIR
"""
import json
import sys
from pathlib import Path

google, emojibase, out = (Path(a) for a in sys.argv[1:4])
emoji = json.loads((google / "emoji.json").read_text())
cldr = {}
for entry in json.loads((emojibase / "en" / "data.json").read_text()):
    cldr[entry["hexcode"].upper()] = entry
    cldr.setdefault(entry["hexcode"].upper().replace("-FE0F", ""), entry)

images, captions = [], []
for e in sorted(emoji, key=lambda e: e["sort_order"]):
    if not e.get("has_img_google"):
        continue
    code = e["unified"].upper()
    entry = cldr.get(code) or cldr.get(code.replace("-FE0F", ""))
    name = (entry["label"] if entry else e["name"]).lower()
    images.append({"id": code, "file": f"img/google/64/{e['image']}", "group": e["category"], "subgroup": e["subcategory"]})
    texts = [("name", name)]
    tags = entry.get("tags", []) if entry else []
    texts.append(("keywords", ", ".join(tags) if tags else " ".join(s.replace("_", " ") for s in e["short_names"])))
    short = " ".join(s.replace("_", " ") for s in e["short_names"])
    if short != name and short != texts[1][1]:
        texts.append(("short", short))
    captions += [{"id": f"{code}-{kind}", "image_id": code, "text": text} for kind, text in texts]

out.mkdir(parents=True, exist_ok=True)
for name, rows in [("images.jsonl", images), ("captions.jsonl", captions)]:
    (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
print(f"{len(images)} images, {len(captions)} captions")
