#!/usr/bin/env python3
"""A tiny, randomly initialised SmolVLM (``idefics3``) vision projector for the vision tests.

No small vision model can be downloaded, so the tests make one: :func:`write_projector` writes an
mmproj GGUF with the real SmolVLM architecture, as the pinned llama.cpp's ``tools/mtmd/clip.cpp``
loads it (projector type ``idefics3``), sized to feed SmolLM2-135M-Instruct (``n_embd`` 576):

- a SigLIP vision tower: a ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution
  (``v.patch_embd.weight``/``.bias``), learned position embeddings (``v.position_embd.weight``,
  one row per patch of an ``image_size`` square), ``block_count`` pre-norm transformer blocks
  (``v.blk.N.ln1``, ``attn_q``/``attn_k``/``attn_v``/``attn_out``, ``ln2``, ``ffn_up``/
  ``ffn_down``, all with biases; GELU because ``clip.use_gelu`` is true) and a final layer norm
  (``v.post_ln``);
- idefics3's connector: a pixel shuffle that folds each ``scale_factor`` x ``scale_factor`` block
  of patch features into one vector (``n_embd * scale_factor**2`` wide), then one bias-free linear
  layer ``mm.model.fc.weight`` to ``projection_dim`` (= the text model's ``n_embd``).

Every key and tensor name is written by its raw string, as ``clip-impl.h`` spells it. The keys
clip.cpp requires are ``clip.projector_type``, ``clip.has_vision_encoder``,
``clip.vision.{embedding_length, feed_forward_length, block_count, projection_dim,
attention.head_count, attention.layer_norm_epsilon, image_size, patch_size}`` and
``clip.vision.image_mean``/``image_std`` (float32 arrays of 3).
``clip.vision.projector.scale_factor`` is optional to the loader but needed in practice (the
default of 1 trips an assertion in the pixel shuffle), and ``clip.vision.preproc_image_size``
selects the tiling described below.

Weights are drawn from a seeded normal distribution with fan-in scaling, so activations stay
finite and O(1) through the tower, the output embeddings have about the spread of SmolLM2's token
embeddings (std ~0.13), and different images give different embeddings (and different greedy
continuations). The defaults: 64 x 64 tiles of 8 x 8 patches (64 patches), width 128, 2 heads,
FFN 256, 2 blocks, scale factor 2 (16 tokens per tile), longest edge 128; all f32, 2.3 MB; a tile
encodes in about 1 ms on one CPU core.

How many tokens an image adds (mtmd, projector ``idefics3``)
------------------------------------------------------------

mtmd's idefics3 preprocessor (``mtmd_image_preprocessor_idefics3``, with
``clip.vision.preproc_image_size`` set and no ``--image-min/max-tokens`` override):

1. resizes the image, keeping its aspect ratio, so that its longer side is exactly
   ``preproc_image_size`` (up or down); the shorter side is ``int(L / aspect)`` (or
   ``int(L * aspect)``), rounded up to an even number (if that is 0, i.e. the aspect ratio exceeds
   the longest edge, mtmd fails: "resize target 128x0 is out of range");
2. stretches that to the next multiple of ``image_size`` on each side, giving a grid of
   ``cols x rows`` tiles, each ``image_size`` square (a 1 x 1 grid is still one tile);
3. adds a global "overview" image: the whole picture squeezed to ``image_size`` square.

Each tile and the overview is its own image chunk of
``tokens_per_tile = (image_size // patch_size // scale_factor) ** 2`` embeddings (what
``mtmd_input_chunk_get_n_tokens`` reports for each image chunk), so an image adds

    ``(cols * rows + 1) * tokens_per_tile``

embedding tokens in ``cols * rows + 1`` image chunks (:func:`expected_image_tokens`). With the
defaults a landscape image gets a 2 x 2 grid (80 tokens) unless its aspect ratio exceeds 128/65
(about 2:1), when the short side fits one tile (a 2 x 1 grid, 48 tokens); portrait images
likewise (1 x 2). Any image, however small, is scaled up to the longest edge first. The chunks
are separated by text chunks, so mtmd encodes each tile as its own batch.

Text mtmd inserts around them (``MTMD_SLICE_TMPL_IDEFICS3``, tiles first, overview last): before
tile (row r, column c, 1-based) the text ``<fake_token_around_image><row_r_col_c>`` (tokenized with
special-token parsing, so plain BPE text with a vocabulary that lacks these tokens); a ``"\\n"``
token after every row but the last; before the overview the three tokens ``"\\n\\n"``,
``<fake_token_around_image>``, ``<global-img>``; after it ``<fake_token_around_image>``
(:func:`expected_marker_tokens`). These four are looked up as single vocabulary pieces
(``mtmd_context::lookup_token``), and a piece that is not in the vocabulary becomes
``LLAMA_TOKEN_NULL`` (-1) in the text chunk, which aborts the prompt's evaluation
(``GGML_ASSERT(idx >= 0)`` in ``mtmd_helper_eval_chunk_single``). SmolLM2's vocabulary has
``"\\n\\n"`` (id 1116) and ``"\\n"`` (198) but none of the ``<...image...>`` tokens, so the stock
SmolLM2 cannot take an image through mtmd: :func:`write_text_model` writes a copy whose unused
control tokens are renamed to SmolVLM's image tokens.

Usage::

    python tests/vision_model.py OUT.gguf [--seed N]        # writes the projector, prints facts
    python tests/vision_model.py OUT.gguf --text-model SRC DST  # also the text model copy
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

#: The text model's embedding width (SmolLM2-135M-Instruct).
SMOLLM2_N_EMBD = 576

# defaults of write_projector and expected_image_tokens (kept in one place)
IMAGE_SIZE = 64
PATCH_SIZE = 8
SCALE_FACTOR = 2
PREPROC_IMAGE_SIZE = 128

Array = npt.NDArray[np.float32]


def tokens_per_tile(
    *, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE, scale_factor: int = SCALE_FACTOR
) -> int:
    """Embedding tokens per image chunk (each tile and the overview): clip_n_output_tokens."""
    side = image_size // patch_size
    return side * side // (scale_factor * scale_factor)


def tile_grid(
    width: int,
    height: int,
    *,
    image_size: int = IMAGE_SIZE,
    preproc_image_size: int = PREPROC_IMAGE_SIZE,
) -> tuple[int, int]:
    """(cols, rows): the tile grid mtmd's idefics3 preprocessor cuts a width x height image into."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    longest = preproc_image_size
    aspect = width / height  # a double, as in mtmd-image.cpp
    if width >= height:
        new_w = longest
        new_h = int(longest / aspect)
        new_h += new_h % 2
    else:
        new_h = longest
        new_w = int(longest * aspect)
        new_w += new_w % 2
    if new_w == 0 or new_h == 0:
        # mtmd fails too: "resize target 128x0 is out of range" (aspect ratio over the longest edge)
        raise ValueError(f"mtmd cannot tile a {width}x{height} image (resized to {new_w}x{new_h})")
    cols = -(-new_w // image_size)
    rows = -(-new_h // image_size)
    return cols, rows


def expected_image_tokens(
    width: int,
    height: int,
    *,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    scale_factor: int = SCALE_FACTOR,
    preproc_image_size: int = PREPROC_IMAGE_SIZE,
) -> int:
    """Embedding tokens mtmd produces for a width x height image: (tiles + overview) * per tile.

    Counts only the image chunks' tokens (the sum of mtmd_input_chunk_get_n_tokens over them),
    not the marker text around the tiles (see the module docstring). The keyword arguments must
    match those the projector was written with.
    """
    cols, rows = tile_grid(
        width, height, image_size=image_size, preproc_image_size=preproc_image_size
    )
    per_tile = tokens_per_tile(
        image_size=image_size, patch_size=patch_size, scale_factor=scale_factor
    )
    return (cols * rows + 1) * per_tile


def expected_marker_tokens(
    width: int,
    height: int,
    *,
    image_size: int = IMAGE_SIZE,
    preproc_image_size: int = PREPROC_IMAGE_SIZE,
) -> int:
    """Text tokens mtmd inserts around a width x height image's chunks: 2 per tile + rows + 3.

    Per tile ``<fake_token_around_image>`` and ``<row_r_col_c>``, a newline after each row but the
    last, ``"\\n\\n" <fake_token_around_image> <global-img>`` before the overview and
    ``<fake_token_around_image>`` after it. Valid for a vocabulary in which these are single
    tokens (:func:`write_text_model`); the prompt's own text comes on top.
    """
    cols, rows = tile_grid(
        width, height, image_size=image_size, preproc_image_size=preproc_image_size
    )
    return 2 * cols * rows + (rows - 1) + 4


def write_projector(
    path: str | Path,
    *,
    seed: int = 0,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    scale_factor: int = SCALE_FACTOR,
    preproc_image_size: int = PREPROC_IMAGE_SIZE,
    n_embd: int = 128,
    n_ff: int = 256,
    n_head: int = 2,
    n_layer: int = 2,
    projection_dim: int = SMOLLM2_N_EMBD,
    embed_std: float = 0.13,
) -> dict[str, Any]:
    """Writes a random idefics3 (SmolVLM) mmproj GGUF to ``path``; returns its facts.

    ``projection_dim`` must equal the text model's ``n_embd``; ``embed_std`` is the target spread
    of the output embeddings. The returned dict holds the hyperparameters, ``tokens_per_tile``,
    ``max_image_tokens`` (a square image: the largest grid) and ``path``.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    side = image_size // patch_size
    if scale_factor < 2 or side % scale_factor:
        raise ValueError(f"{side} patches per side do not split into scale_factor {scale_factor}")
    if n_embd % n_head:
        raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
    if n_ff == n_embd:
        # clip.cpp swaps ffn_up/ffn_down of idefics3 files when ffn_down's input width is n_embd
        raise ValueError("n_ff must differ from n_embd")

    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> Array:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def linear(n_out: int, n_in: int, gain: float = 1.0) -> Array:
        return normal((n_out, n_in), gain / math.sqrt(n_in))

    def norm_weight(n: int) -> Array:
        return (1.0 + normal((n,), 0.05)).astype(np.float32)

    # numpy shapes are ggml's ne reversed: a (n_out, n_in) matrix is ne = [n_in, n_out]
    tensors: dict[str, Array] = {}
    tensors["v.patch_embd.weight"] = normal(
        (n_embd, 3, patch_size, patch_size), 1.0 / math.sqrt(3 * patch_size * patch_size)
    )
    tensors["v.patch_embd.bias"] = normal((n_embd,), 0.02)
    tensors["v.position_embd.weight"] = normal((side * side, n_embd), 0.2)
    for il in range(n_layer):
        blk = f"v.blk.{il}"
        tensors[f"{blk}.ln1.weight"] = norm_weight(n_embd)
        tensors[f"{blk}.ln1.bias"] = normal((n_embd,), 0.02)
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{blk}.{name}.weight"] = linear(n_embd, n_embd)
            tensors[f"{blk}.{name}.bias"] = normal((n_embd,), 0.02)
        tensors[f"{blk}.ln2.weight"] = norm_weight(n_embd)
        tensors[f"{blk}.ln2.bias"] = normal((n_embd,), 0.02)
        tensors[f"{blk}.ffn_up.weight"] = linear(n_ff, n_embd)
        tensors[f"{blk}.ffn_up.bias"] = normal((n_ff,), 0.02)
        tensors[f"{blk}.ffn_down.weight"] = linear(n_embd, n_ff, gain=0.5)
        tensors[f"{blk}.ffn_down.bias"] = normal((n_embd,), 0.02)
    tensors["v.post_ln.weight"] = norm_weight(n_embd)
    tensors["v.post_ln.bias"] = normal((n_embd,), 0.02)
    # after post_ln every feature has unit variance, so this gives outputs of std ~embed_std
    tensors["mm.model.fc.weight"] = linear(
        projection_dim, n_embd * scale_factor * scale_factor, gain=embed_std
    )

    writer = gguf.GGUFWriter(str(path), arch="clip")
    writer.add_string("general.type", "mmproj")
    writer.add_string("general.name", f"tiny-random-idefics3-seed{seed}")
    writer.add_string("general.description", "random SmolVLM (idefics3) vision projector for tests")
    writer.add_uint32("general.file_type", 0)  # all f32
    writer.add_string("clip.projector_type", "idefics3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projection_dim", projection_dim)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_uint32("clip.vision.projector.scale_factor", scale_factor)
    writer.add_uint32("clip.vision.preproc_image_size", preproc_image_size)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    per_tile = tokens_per_tile(
        image_size=image_size, patch_size=patch_size, scale_factor=scale_factor
    )
    max_side = -(-preproc_image_size // image_size)
    return {
        "path": str(path),
        "projector_type": "idefics3",
        "seed": seed,
        "image_size": image_size,
        "patch_size": patch_size,
        "scale_factor": scale_factor,
        "preproc_image_size": preproc_image_size,
        "n_embd": n_embd,
        "n_ff": n_ff,
        "n_head": n_head,
        "n_layer": n_layer,
        "projection_dim": projection_dim,
        "n_tensors": len(tensors),
        "tokens_per_tile": per_tile,
        "max_image_tokens": (max_side * max_side + 1) * per_tile,
    }


def image_token_texts(max_grid: int = -(-PREPROC_IMAGE_SIZE // IMAGE_SIZE)) -> list[str]:
    """SmolVLM's special tokens that mtmd's idefics3 template uses, for grids up to max_grid."""
    rows_cols = [
        f"<row_{r}_col_{c}>" for r in range(1, max_grid + 1) for c in range(1, max_grid + 1)
    ]
    return ["<fake_token_around_image>", "<global-img>", *rows_cols]


def write_text_model(
    src: str | Path,
    dst: str | Path,
    *,
    max_grid: int = -(-PREPROC_IMAGE_SIZE // IMAGE_SIZE),
    first_id: int = 3,
) -> dict[str, int]:
    """Copies the text model GGUF ``src`` to ``dst`` with SmolVLM's image tokens in its vocabulary.

    mtmd's idefics3 template looks ``<fake_token_around_image>`` and ``<global-img>`` up as single
    vocabulary pieces and puts ``LLAMA_TOKEN_NULL`` (-1) into the prompt when they are missing, and
    decoding that prompt aborts (``GGML_ASSERT(idx >= 0)`` in ``mtmd_helper_eval_chunk_single``).
    SmolLM2's vocabulary lacks them, so this renames control tokens from ``first_id`` on (in
    SmolLM2 ids 3..16 are unused code-dataset markers such as ``<repo_name>``) to those two and to
    ``<row_r_col_c>`` for grids up to ``max_grid`` x ``max_grid``, keeping their control type (as
    SmolVLM's own tokenizer has them: special, one token each). Nothing else changes: the tensors
    are copied as they are, so the renamed tokens keep their (never trained) embeddings.
    Returns {token text: id}.
    """
    reader = gguf.GGUFReader(str(src))
    tokens: list[str] = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types: list[int] = list(reader.fields["tokenizer.ggml.token_type"].contents())
    texts = image_token_texts(max_grid)
    ids = range(first_id, first_id + len(texts))
    control = int(gguf.TokenType.CONTROL)
    if ids.stop > len(tokens) or any(types[i] != control for i in ids):
        raise ValueError(f"tokens {ids.start}..{ids.stop - 1} of {src} are not all control tokens")
    if set(texts) & set(tokens):
        raise ValueError(f"{src} already has some of {texts}")
    for i, text in zip(ids, texts, strict=True):
        tokens[i] = text

    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst), arch=arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        vtype = gguf.GGUFValueType(field.types[0])
        sub_type = (
            gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        )
        value = tokens if key == "tokenizer.ggml.tokens" else field.contents()
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dict(zip(texts, ids, strict=True))


def write_png(path: str | Path, pixels: npt.NDArray[np.uint8]) -> None:
    """Writes an 8-bit RGB PNG of ``pixels`` (shape height x width x 3), with no dependencies."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 array of shape (h, w, 3), got {pixels.dtype} {pixels.shape}"
        )
    height, width = pixels.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # each scanline starts with its filter type (0: none)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the mmproj GGUF file to write")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    parser.add_argument(
        "--text-model",
        nargs=2,
        metavar=("SRC", "DST"),
        help="also copy the text model SRC to DST with the image tokens in its vocabulary",
    )
    args = parser.parse_args(argv)
    facts = write_projector(args.out, seed=args.seed)
    if args.text_model:
        src, dst = args.text_model
        facts["text_model"] = dst
        facts["image_token_ids"] = write_text_model(src, dst)
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
