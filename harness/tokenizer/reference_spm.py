#!/usr/bin/env python3
"""The oracle of spm_oracle_test.cpp (docs/tokenizers.md §11): trains a tiny SentencePiece BPE
model with Debian's python3-sentencepiece in Llama-2's settings (byte_fallback, identity
normalization, dummy prefix, digits split, <unk> <s> </s> at ids 0 1 2), writes it as
tokenizer.model and converts it to the two tokenizer.json layouts transformers writes for it
(convert_slow_tokenizer.py, LlamaConverter; transformers itself is not needed):

  legacy/tokenizer.json  legacy: true (Llama-2): normalizer Sequence[Prepend("▁"), Replace(" ", "▁")],
                         no pre-tokenizer; merges as "a b" strings.
  first/tokenizer.json   legacy: false: no normalizer, Metaspace(prepend_scheme "first",
                         split false); merges as ["a", "b"] pairs.

Both: model BPE(unk_token "<unk>", fuse_unk, byte_fallback), added tokens <unk> <s> </s>
(special, normalized false), post-processor TemplateProcessing "<s> $A", decoder
Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)].

Then, for every text of CASES.json, what huggingface/tokenizers gives for the legacy file, built
from sentencepiece's own Encode: the text is cut at the literal special tokens (leftmost,
longest) and every other segment is encoded by sentencepiece on its own, dummy prefix
included (the legacy rule); and sentencepiece's Decode of those ids without the special ones.

Usage: reference_spm.py CORPUS OUTDIR VOCAB_SIZE CASES.json RESULTS.json
RESULTS.json: {"vocab_size": n, "cases": [{"text", "sp", "legacy", "decode_skip_special"}]}.
Exit status 4 when python3-sentencepiece is missing.
"""
import json
import os
import sys

try:
    import sentencepiece as spm
except ImportError:
    print("reference_spm.py: python3-sentencepiece is not installed", file=sys.stderr)
    sys.exit(4)

SPACE = "\u2581"
SPECIALS = ["<unk>", "<s>", "</s>"]


def train(corpus, outdir, vocab_size):
    prefix = os.path.join(outdir, "sp")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=0.9995,  # a few rare characters of the corpus go to byte fallback
        hard_vocab_limit=False,
        max_sentence_length=1000000,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    os.replace(prefix + ".model", os.path.join(outdir, "tokenizer.model"))
    os.remove(prefix + ".vocab")
    return spm.SentencePieceProcessor(model_file=os.path.join(outdir, "tokenizer.model"))


def generate_merges(vocab, vocab_scores, skip_tokens):
    """convert_slow_tokenizer.py generate_merges (with the newer skip_tokens: special pieces are
    never merge parts or results, as sentencepiece never builds them from text)."""
    reverse = vocab_scores is not None
    vocab_scores = dict(vocab_scores) if reverse else vocab
    merges = []
    for merge, piece_score in vocab_scores.items():
        if merge in skip_tokens:
            continue
        local = []
        for index in range(1, len(merge)):
            piece_l, piece_r = merge[:index], merge[index:]
            if piece_l in skip_tokens or piece_r in skip_tokens:
                continue
            if piece_l in vocab and piece_r in vocab:
                local.append((piece_l, piece_r, piece_score))
        local = sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges = sorted(merges, key=lambda val: (val[2], len(val[0]), len(val[1])), reverse=reverse)
    return [(val[0], val[1]) for val in merges]


def convert(sp, legacy):
    n = sp.get_piece_size()
    # LlamaConverter.vocab: <unk> <s> </s>, then the pieces with their scores.
    vocab_scores = [(p, 0.0) for p in SPECIALS] + [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, n)]
    vocab = {sp.id_to_piece(i): i for i in range(n)}  # SentencePieceExtractor.extract
    skip = {sp.id_to_piece(i) for i in range(n) if sp.is_control(i) or sp.is_unknown(i)}
    merges = generate_merges(vocab, vocab_scores, skip)
    bpe_vocab = {word: i for i, (word, _) in enumerate(vocab_scores)}
    added = [
        {"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, p in enumerate(SPECIALS)
    ]
    if legacy:
        normalizer = {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": SPACE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
            ],
        }
        pre_tokenizer = None
        merges_json = [f"{a} {b}" for a, b in merges]
    else:
        normalizer = None
        pre_tokenizer = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False}
        merges_json = [[a, b] for a, b in merges]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": bpe_vocab,
            "merges": merges_json,
        },
    }


def split_specials(text):
    """The text cut at literal special tokens, leftmost first and longest at one position."""
    out, plain, i = [], 0, 0
    while i < len(text):
        hit = max((s for s in SPECIALS if text.startswith(s, i)), key=len, default=None)
        if hit is None:
            i += 1
            continue
        if i > plain:
            out.append((False, text[plain:i]))
        out.append((True, hit))
        i += len(hit)
        plain = i
    if plain < len(text):
        out.append((False, text[plain:]))
    return out


def main():
    corpus, outdir, vocab_size, cases_file, results_file = sys.argv[1:6]
    sp = train(corpus, outdir, int(vocab_size))
    for legacy, sub in ((True, "legacy"), (False, "first")):
        os.makedirs(os.path.join(outdir, sub), exist_ok=True)
        with open(os.path.join(outdir, sub, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(convert(sp, legacy), f, ensure_ascii=False, indent=2)
    with open(cases_file, encoding="utf-8") as f:
        texts = json.load(f)
    results = []
    for text in texts:
        ids = []
        for special, segment in split_specials(text):
            ids += [SPECIALS.index(segment)] if special else sp.encode(segment)
        plain = [i for i in ids if i >= len(SPECIALS)]
        results.append({"text": text, "sp": sp.encode(text), "legacy": ids, "decode_skip_special": sp.decode(plain)})
    with open(results_file, "w", encoding="utf-8") as f:
        json.dump({"vocab_size": sp.get_piece_size(), "cases": results}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
