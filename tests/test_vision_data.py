"""Prompt rows with images: every stored form, chat image parts, the bad-input messages, round trips."""

import base64
import io
import json

import pytest
from PIL import Image

from longrl.config import DataConfig
from longrl.data.rows import Rejects
from longrl.data.sources import load_prompts, load_sft_examples, prompt_row, read_prompts
from longrl.errors import UserError
from longrl.types import Prompt


def png(color=(255, 0, 0), size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


RED, BLUE = png((255, 0, 0)), png((0, 0, 255), (5, 9))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(images, prompt="<image>What colour?", **kw):
    return {"prompt": prompt, "answer": "red", "images": images, **kw}


def test_images_column_as_path_base64_data_uri_and_dict(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(RED)
    b64 = base64.b64encode(BLUE).decode()
    rows = [row(["img/red.png"]), row([b64]), row([f"data:image/png;base64,{b64}"]),
            row([{"bytes": None, "path": "img/red.png"}]), row("img/red.png"),
            row([str(tmp_path / "img" / "red.png"), b64], prompt="<image> then <image>: colours?"),
            {"prompt": "text only", "answer": "1"}]
    prompts = load_prompts(write_jsonl(tmp_path / "v.jsonl", rows))
    assert [p.images for p in prompts] == [[RED], [BLUE], [BLUE], [RED], [RED], [RED, BLUE], None]
    assert all("images" not in p.extra for p in prompts)
    assert prompts[0].text == "<image>What colour?"


def test_parquet_bytes_and_hf_image_feature_dicts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "blue.png").write_bytes(BLUE)
    table = pa.table({"prompt": ["<image>a?", "<image><image>b?"], "answer": ["1", "2"],
                      "images": [[{"bytes": RED, "path": "x.png"}],
                                 [{"bytes": None, "path": "blue.png"}, {"bytes": RED, "path": None}]]})
    pq.write_table(table, tmp_path / "v.parquet")
    a, b = load_prompts(tmp_path / "v.parquet")
    assert a.images == [RED] and b.images == [BLUE, RED]
    raw = pa.table({"prompt": ["<image>c?"], "answer": ["3"], "images": [[BLUE]]})
    pq.write_table(raw, tmp_path / "raw.parquet")
    assert load_prompts(tmp_path / "raw.parquet")[0].images == [BLUE]


def test_chat_messages_with_image_parts(tmp_path):
    (tmp_path / "red.png").write_bytes(RED)
    b64 = base64.b64encode(BLUE).decode()
    parts = [{"role": "system", "content": "Look closely."},
             {"role": "user", "content": [{"type": "image", "path": "red.png"}, {"type": "text", "text": " and "},
                                          {"type": "image", "image": b64}, {"type": "text", "text": "?"}]}]
    bare = [{"role": "user", "content": [{"type": "text", "text": "Which? "}, {"type": "image"}]}]
    (p, q) = load_prompts(write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": parts, "answer": "x"}, {"prompt": bare, "answer": "y", "images": [b64]}]))
    assert p.images == [RED, BLUE] and p.text == "<image> and <image>?"
    assert p.messages == [{"role": "system", "content": "Look closely."},
                          {"role": "user", "content": "<image> and <image>?"}]
    assert q.images == [BLUE] and q.messages == [{"role": "user", "content": "Which? <image>"}]


def test_round_trip_through_prompt_row(tmp_path):
    p = Prompt(id="v1", text="<image>\nHow many? <image>", reference="3", task="math", level=2,
               images=[RED, BLUE], extra={"src": "scene"})
    m = Prompt(id="v2", text="<image>Hi", reference="1", task="math", images=[BLUE],
               messages=[{"role": "user", "content": "<image>Hi"}])
    path = write_jsonl(tmp_path / "rt.jsonl", [prompt_row(p), prompt_row(m)])
    assert load_prompts(path) == [p, m]


@pytest.mark.parametrize("bad, reason", [
    (row(["missing.png"]), "images[0]: no such image file 'missing.png' (relative paths are read from"),
    (row([base64.b64encode(b"not an image at all").decode()]), "images[0]: cannot decode image"),
    (row([{"bytes": None, "path": None}]), "an image object needs 'bytes' or 'path'"),
    (row(["https://x.org/a.png"]), "is a URL; longrl reads local files only"),
    (row(["!!!"]), "is neither an image file nor base64 data"),
    (row([], prompt="<image> what?"), "the prompt has 1 <image> placeholder(s) but 0 image(s)"),
    (row(["red.png", "red.png"]), "the prompt has 1 <image> placeholder(s) but 2 image(s)"),
    ({"prompt": "no placeholder", "answer": "1", "images": ["red.png"]},
     "the prompt has 0 <image> placeholder(s) but 1 image(s)"),
    ({"prompt": [{"role": "user", "content": [{"type": "image", "path": "red.png"}, {"type": "image"}]}],
      "answer": "1"}, "either every image part names its image"),
    ({"prompt": [{"role": "user", "content": [{"type": "audio"}]}], "answer": "1"},
     "messages[0].content[0] must be a {'type': 'text'"),
])
def test_bad_image_rows_name_file_line_and_reason(tmp_path, bad, reason):
    (tmp_path / "red.png").write_bytes(RED)
    path = write_jsonl(tmp_path / "bad.jsonl", [row(["red.png"]), bad])
    with pytest.raises(UserError) as e:
        load_prompts(path)
    assert f"{path}:2: " in str(e.value) and reason in str(e.value)


def test_skip_invalid_sends_bad_image_rows_to_the_rejects(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [row([base64.b64encode(RED).decode()]), row(["gone.png"])])
    prompts, rejects = read_prompts(path, DataConfig(skip_invalid=True))
    assert [p.images for p in prompts] == [[RED]]
    assert isinstance(rejects, Rejects) and [(pos, "no such image file" in r) for pos, r, _ in rejects.rows] == [
        (2, True)]
    rejects.write(tmp_path / "rejects.jsonl")
    (rec,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert rec["line"] == 2 and json.loads(rec["row"])["images"] == ["gone.png"]


def test_parquet_rejects_show_image_bytes_by_size(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["no placeholder"], "answer": ["1"], "images": [[RED]]}),
                   tmp_path / "r.parquet")
    _, rejects = read_prompts(tmp_path / "r.parquet", DataConfig(skip_invalid=True))
    assert json.loads(rejects.rows[0][2])["images"] == [f"<{len(RED)} bytes>"]


def test_sft_rows_carry_their_images(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    path = write_jsonl(tmp_path / "sft.jsonl", [
        {"prompt": "2+2?", "response": "4"},
        {"prompt": "<image>?", "response": "red", "images": ["a.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "text", "text": "?"}]},
                      {"role": "assistant", "content": "red"}]}])
    text, column, parts = load_sft_examples(path)
    assert text == ("2+2?", "4")
    assert column == ("<image>?", "red", [png()])
    assert parts[1:] == ("red", [png()]) and parts[0][-1]["content"] == "<image>?"


def test_sft_rows_with_mismatched_images_are_refused_by_row(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "2+2?", "response": "4"},
                                                {"prompt": "no placeholder", "response": "red", "images": ["a.png"]}])
    with pytest.raises(UserError, match=r"sft.jsonl:2: the prompt has 0 <image> placeholder"):
        load_sft_examples(path)
