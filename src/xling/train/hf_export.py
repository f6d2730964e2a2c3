"""`xling export RUN_DIR OUT --format hf`: a trained run as a Hugging Face `GPT2LMHeadModel` checkpoint
plus a tokenizer that `AutoTokenizer.from_pretrained(OUT)` loads.

The model is the paper's GPT exactly: GPT-2's pre-LN blocks with learned positions, tanh GELU
("gelu_new"), LayerNorm eps 1e-5, no dropout. xling scales token embeddings by sqrt(d_model)
before adding positions: the export folds that scale into the token embedding. Q, K and V are
concatenated into `c_attn` (GPT-2's Conv1D stores [in, out], so every projection is transposed), and
the untied head becomes `lm_head` (tie_word_embeddings false). GPT-2 cannot express attention
narrower than the model (the paper's `mini`: 8 heads of 32 in width 512): such a run is refused.

The model's vocabulary holds every language (V x (1 + clones), or a merged vocabulary); a
tokenizer maps text to one language's ids: its base tokenizer's ids through that language's row of
the id table (`--language`, default the first). The tokenizer is a tokenizers-library
tokenizer.json whose vocabulary is the language's piece -> model id mapping: a SentencePiece BPE
model (xling's own, or one brought) is converted into one (same normalisation, pieces and merges),
a brought tokenizer.json is renumbered. Encoding adds no special token, and special tokens written
in text stay text, as in xling; the end-of-document symbol is the tokenizer's BOS and EOS.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..data.brought import HFTokenizer
from ..data.sources import optional_module
from ..data.tokenizer import Tokenizer, sentencepiece_spec
from ..errors import XlingError
from ..fsio import UMASK, remove_stale_temporaries, temporary_beside
from ..model_dims import resolve_model
from .rundir import RunDir
from .session import load_session

SP_UNIGRAM, SP_BPE = 1, 2  # TrainerSpec.model_type of a unigram and of a BPE model


# --------------------------------------------------------------------------- the model


def check_exportable(dims) -> None:
    if dims.d_attn != dims.d_model:
        raise XlingError(f"GPT2LMHeadModel needs attention as wide as the model (n_heads x d_head = d_model); this run "
                         f"has {dims.n_heads} x {dims.d_head} = {dims.d_attn} inside {dims.d_model} (e.g. the paper's "
                         "mini preset), so it cannot be exported to GPT-2")


def gpt2_config(dims, eod: int, pad: int | None) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": dims.vocab_size, "n_positions": dims.seq_len, "n_embd": dims.d_model,
        "n_layer": dims.n_layers, "n_head": dims.n_heads, "n_inner": dims.d_mlp,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "summary_first_dropout": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": False, "use_cache": True, "torch_dtype": "float32", "dtype": "float32",
        "bos_token_id": eod, "eos_token_id": eod, **({"pad_token_id": pad} if pad is not None else {}),
    }


def gpt2_weights(model) -> dict[str, torch.Tensor]:
    """The GPT's parameters under GPT2LMHeadModel's names (fp32, contiguous, none shared)."""
    dims = model.dims
    out = {"transformer.wte.weight": model.tok_emb.weight * math.sqrt(dims.d_model),
           "transformer.wpe.weight": model.pos_emb.weight,
           "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias,
           "lm_head.weight": model.head.weight}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        out.update({
            h + "ln_1.weight": block.ln_1.weight, h + "ln_1.bias": block.ln_1.bias,
            h + "attn.c_attn.weight": torch.cat([block.q.weight, block.k.weight, block.v.weight]).t(),
            h + "attn.c_attn.bias": torch.cat([block.q.bias, block.k.bias, block.v.bias]),
            h + "attn.c_proj.weight": block.o.weight.t(), h + "attn.c_proj.bias": block.o.bias,
            h + "ln_2.weight": block.ln_2.weight, h + "ln_2.bias": block.ln_2.bias,
            h + "mlp.c_fc.weight": block.fc.weight.t(), h + "mlp.c_fc.bias": block.fc.bias,
            h + "mlp.c_proj.weight": block.proj.weight.t(), h + "mlp.c_proj.bias": block.proj.bias,
        })
    return {name: t.detach().float().cpu().contiguous().clone() for name, t in out.items()}


# --------------------------------------------------------------------------- the tokenizer


def _tokenizers():
    return optional_module("tokenizers", "tokenizers", "Hugging Face exports (xling export --format hf)")


def sentencepiece_to_json(tokenizer: Tokenizer) -> dict:
    """A SentencePiece BPE or unigram model as a tokenizers-library tokenizer (tokenizer.json, parsed)
    with the same ids: the model's normaliser (its precompiled character map, extra whitespace
    removed, a space before the text), pieces split at spaces, the model (BPE: merges in the order
    SentencePiece applies them, the merged piece with the highest score first; unigram: the pieces'
    scores, for the same best segmentation), byte fallback, and its control symbols as special tokens."""
    tk = _tokenizers()
    spec = sentencepiece_spec(tokenizer.model_bytes)
    if spec["model_type"] not in (SP_UNIGRAM, SP_BPE):
        kind = {3: "character", 4: "word"}.get(spec["model_type"], f"type {spec['model_type']}")
        raise XlingError(f"only SentencePiece BPE and unigram models can be exported as a tokenizer.json, and this "
                         f"run's is a {kind} model: train the run with xling's own tokenizer (no tokenizer.path) or "
                         "bring a BPE or unigram model")
    sp = tokenizer._sp
    size = sp.get_piece_size()
    if spec["model_type"] == SP_UNIGRAM:
        # (SentencePiece never reads a control or byte piece from the text; the tokenizers library reads every piece,
        # so "<s>" or "<0x41>" written in a document becomes that piece: the README says so. A lower score does not
        # help: the penalty of an unknown character follows the lowest score.)
        byte_fallback = any(sp.is_byte(i) for i in range(size))
        model = tk.models.Unigram([(sp.id_to_piece(i), sp.get_score(i)) for i in range(size)], unk_id=sp.unk_id(),
                                  byte_fallback=byte_fallback)
    else:
        model = _bpe(tk, sp, size)
    hf = tk.Tokenizer(model)
    steps = [tk.normalizers.Precompiled(spec["charsmap"])] if spec["charsmap"] else []
    if spec["remove_extra_whitespaces"]:
        steps += [tk.normalizers.Strip(), tk.normalizers.Replace(tk.Regex(" {2,}"), " ")]
    if steps:
        hf.normalizer = tk.normalizers.Sequence(steps)
    prepend = "always" if spec["add_dummy_prefix"] else "never"
    hf.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=True)
    decode = [tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()]
    if spec["add_dummy_prefix"]:
        decode.append(tk.decoders.Strip(content=" ", left=1, right=0))
    hf.decoder = tk.decoders.Sequence(decode)
    specials = [sp.id_to_piece(i) for i in range(size) if sp.is_control(i) or sp.is_unknown(i)]
    hf.add_special_tokens([tk.AddedToken(piece, special=True, normalized=False) for piece in specials])
    return json.loads(hf.to_str())


def _bpe(tk, sp, size: int):
    """SentencePiece's BPE model as the tokenizers library's: its merges, highest score first."""
    vocab = {sp.id_to_piece(i): i for i in range(size)}
    normal = {sp.id_to_piece(i): i for i in range(size)
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    merges = []
    for piece, i in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                merges.append((-sp.get_score(i), i, normal[left], normal[right], left, right))
    merges.sort()
    unk = sp.id_to_piece(sp.unk_id())
    return tk.models.BPE(vocab=vocab, merges=[(m[4], m[5]) for m in merges], unk_token=unk, byte_fallback=True,
                         fuse_unk=True)


def _remap_processor(node, row: list[int]):
    """Post-processors name special tokens by id (TemplateProcessing, Bert/Roberta, Sequence)."""
    if isinstance(node, dict):
        if node.get("type") in ("BertProcessing", "RobertaProcessing"):
            for key in ("sep", "cls"):
                node[key] = [node[key][0], row[node[key][1]]]
        for special in (node.get("special_tokens") or {}).values():
            special["ids"] = [row[i] for i in special.get("ids", [])]
        for child in node.get("processors") or []:
            _remap_processor(child, row)


def remap_tokenizer_json(data: dict, row: list[int], size: int, language: str) -> dict:
    """A tokenizer.json (parsed) whose ids are the base ids `i` < `size` renumbered as row[i]."""
    if row[:size] == list(range(size)):
        return data
    model = data.get("model") or {}
    if model.get("type") == "Unigram" and isinstance(model.get("vocab"), list):  # an id is a place in the list
        if len(set(row[:size])) < size:
            raise XlingError(f"{language} gives two of its pieces one id (its row of languages.table), which a unigram "
                             "tokenizer.json cannot say: export another language of the run")
        # The other languages' ids hold placeholders: a name with a space, which pre-tokenized text never holds, so
        # no text reads one; the lowest score there is, which leaves the penalty of an unknown character as it was
        lowest = min(score for _, score in model["vocab"])
        vocab = [[f"<xling unused {i}>", lowest] for i in range(max(row[:size]) + 1)]
        for i, entry in enumerate(model["vocab"]):
            vocab[row[i]] = entry
        model["vocab"] = vocab
        if model.get("unk_id") is not None:
            model["unk_id"] = row[model["unk_id"]]
    elif isinstance(model.get("vocab"), dict):
        model["vocab"] = {piece: row[i] for piece, i in model["vocab"].items()}
    else:
        raise XlingError(f"cannot renumber a {model.get('type', 'this')} tokenizer.json for {language} (only "
                         "BPE, unigram, WordPiece and WordLevel ones): export the base language instead")
    for token in data.get("added_tokens") or []:
        token["id"] = row[token["id"]]
    _remap_processor(data.get("post_processor"), row)
    return data


def tokenizer_files(tokenizer, row: list[int], language: str, eod: int, pad: int | None, max_length: int) -> dict:
    """{file name: text} of the language's tokenizer: tokenizer.json, tokenizer_config.json and
    special_tokens_map.json."""
    if isinstance(tokenizer, HFTokenizer):
        data = json.loads(tokenizer.model_bytes)
    else:
        data = sentencepiece_to_json(tokenizer)
    data = remap_tokenizer_json(data, row, tokenizer.vocab_size, language)
    pieces = tokenizer.pieces()
    specials = {"bos_token": pieces[tokenizer.eod_id], "eos_token": pieces[tokenizer.eod_id]}
    if tokenizer.unk_id is not None:
        specials["unk_token"] = pieces[tokenizer.unk_id]
    if tokenizer.pad_id is not None:
        specials["pad_token"] = pieces[tokenizer.pad_id]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "clean_up_tokenization_spaces": False, "split_special_tokens": True,
              "add_bos_token": False, "add_eos_token": False, **specials}
    return {"tokenizer.json": json.dumps(data, ensure_ascii=False),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
            "special_tokens_map.json": json.dumps(specials, indent=2, ensure_ascii=False) + "\n"}


# --------------------------------------------------------------------------- the command


def export_hf(run_dir, out, language: str | None = None) -> dict:
    """Write the run's latest checkpoint and `language`'s tokenizer to the new directory `out`
    (complete or not at all). Returns what was written."""
    if not str(out).strip() or Path(out).name in ("", ".."):  # ("." is the working directory, its name "")
        raise XlingError(f"'{out}' names no new directory to export to: give one, e.g. hf-export")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XlingError(f"{out} already exists: give a new (or empty) directory to export to")
    run = RunDir(run_dir).require()
    if out.resolve().is_relative_to(run.path.resolve()):
        raise XlingError(f"{out} is inside the run directory {run.path}, which xling manages: export to a directory "
                         "outside it")
    remove_stale_temporaries(out.parent, beside=out.name)  # what a killed export left
    cfg = run.read_config()
    check_exportable(resolve_model(cfg.model, 1))
    session = load_session(run_dir, device="cpu", computes=False)
    if not all(bool(tensor.isfinite().all()) for tensor in session.model.state_dict().values()):  # (as eval refuses it)
        raise XlingError(f"{session.run.path}: the weights of step {session.step} are not finite numbers (a diverged or "
                         "damaged run): nothing to export")
    setup, dims = session.setup, session.model.dims
    lang = setup.index(language) if language else 0
    language = setup.names[lang]
    if setup.word_order(lang):
        raise XlingError(f"{language} reorders the words of its text ({'+'.join(setup.word_order(lang))}), which a "
                         "tokenizer cannot do: export another language of the run")
    tokenizer = setup.tokenizer(lang)
    row = setup.table[lang].tolist()
    pad = row[tokenizer.pad_id] if tokenizer.pad_id is not None else None
    eod = setup.eod(lang)
    files = tokenizer_files(tokenizer, row, language, eod, pad, dims.seq_len)
    config = gpt2_config(dims, eod, pad)
    config["xling"] = {"run": str(run.path), "language": language, "languages": setup.names,
                       "step": session.step}
    files["config.json"] = json.dumps(config, indent=2) + "\n"
    files["generation_config.json"] = json.dumps({"bos_token_id": eod, "eos_token_id": eod}, indent=2) + "\n"
    tmp = temporary_beside(out, directory=True)
    try:
        save_file(gpt2_weights(session.model), tmp / "model.safetensors", metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", 0o666 & ~UMASK)  # safetensors writes 0600: readable by all, like the rest
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~UMASK)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "language": language, "vocab_size": dims.vocab_size, "eod": eod,
            "files": sorted([*files, "model.safetensors"]), "step": session.step,
            "steps": session.run.read_info(tolerant=True).get("steps")}
