"""Builds a causal LM with random weights from a config, plus a tokenizer trained locally, and saves both to a
folder that loads exactly like a hub checkpoint (no model hub needed).

    python tools/make_random_model.py --out runs/demo-model --corpus data/demo/train.csv            # tiny Llama
    python tools/make_random_model.py --out runs/llama3-8b --preset llama3-8b --corpus data/demo/train.csv

Presets: `tiny` (2 layers, hidden 128: the demo and the tests) and `llama3-8b` (Llama-3-8B's shape: speed and
memory do not depend on the weights' values). The tokenizer is a byte-level BPE trained on the corpus files' text
and the prompt templates, so " A", " B" and " Tie" are single tokens.
"""

import argparse
import glob
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from arena.data import read_pairs  # noqa: E402
from arena.prompts import DEFAULT_LABELS  # noqa: E402

PRESETS = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.1),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, vocab_size=128256),
}
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]
# The tiny preset's init. With hidden 128 and the usual std 0.02, a random lm_head after the final RMSNorm spans only
# about 2.5 nats: LoRA (which leaves the head frozen) cannot express a confident prediction and training stalls at
# the class prior. A std-0.2 head has a pretrained head's range; std 0.1 elsewhere gives attention patterns that
# LoRA turns into the demo's signal faster than near-uniform ones (measured: see data/make_demo_data.py).
TINY_HEAD_STD = 0.2


def train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    texts = [open(path, encoding="utf-8").read() for path in sorted(glob.glob(os.path.join(ROOT, "prompts", "*.txt")))]
    for path in corpus:
        for pair in read_pairs(path):
            texts.extend(" " + text for text in (*pair.prompt, *pair.response_a, *pair.response_b))
    texts.extend(["User: Bot A: Bot B:" + "".join(DEFAULT_LABELS)] * 100)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--corpus", nargs="+", required=True, help="Arena-format files to train the tokenizer on.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--vocab_size", type=int, default=1024, help="Tokenizer vocabulary size.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = train_tokenizer(args.corpus, args.vocab_size)
    shape = dict(PRESETS[args.preset])
    shape.setdefault("vocab_size", len(tokenizer))
    config = LlamaConfig(
        **shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.preset != "tiny" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    if args.preset == "tiny":
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, TINY_HEAD_STD)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote a random {args.preset} Llama ({params / 1e6:.1f}M parameters, vocab {len(tokenizer)}) to {args.out}")


if __name__ == "__main__":
    main()
