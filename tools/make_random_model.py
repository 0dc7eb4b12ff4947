"""Builds a causal LM with random weights from a config, plus a tokenizer trained locally, and saves both to a
folder that loads exactly like a hub checkpoint (no model hub needed).

    python tools/make_random_model.py --out runs/demo-model --corpus data/demo/train.csv            # tiny Llama
    python tools/make_random_model.py --out runs/demo-gemma2 --preset tiny-gemma2 --corpus data/demo/train.csv
    python tools/make_random_model.py --out runs/llama3-8b --preset llama3-8b --corpus data/demo/train.csv

Presets: `tiny` (a Llama, 2 layers, hidden 128: the demo and the tests), `tiny-gemma2` (a Gemma-2 of the same size:
tied input and output embeddings, final logit softcapping, alternating sliding-window layers, and a Gemma-style
chat template) and `llama3-8b` (Llama-3-8B's shape: speed and memory do not depend on the weights' values). The
tokenizer is a byte-level BPE trained on the corpus files' text and the prompt templates, so " A", " B" and " Tie"
are single tokens.
"""

import argparse
import glob
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from arena.data import read_pairs  # noqa: E402
from arena.prompts import DEFAULT_LABELS  # noqa: E402

TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=4096, initializer_range=0.1)
PRESETS = {  # model_type picks the transformers architecture; the rest is its config
    "tiny": dict(TINY, model_type="llama", tie_word_embeddings=False),
    # Gemma-2's own defaults: tie_word_embeddings, final_logit_softcapping 30, attn_logit_softcapping 50. Sliding
    # window 128 (Gemma-2-9B: 4096) so that the demo's prompts reach past it in every other layer.
    "tiny-gemma2": dict(TINY, model_type="gemma2", head_dim=32, query_pre_attn_scalar=32, sliding_window=128),
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, vocab_size=128256, tie_word_embeddings=False),
}
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]
# Gemma's chat layout (one user turn, then the model's turn), for the Gemma-2 preset
CHAT_TOKENS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# The tiny preset's init. With hidden 128 and the usual std 0.02, a random lm_head after the final RMSNorm spans only
# about 2.5 nats: LoRA (which leaves the head frozen) cannot express a confident prediction and training stalls at
# the class prior. A std-0.2 head has a pretrained head's range; std 0.1 elsewhere gives attention patterns that
# LoRA turns into the demo's signal faster than near-uniform ones (measured: see data/make_demo_data.py).
TINY_HEAD_STD = 0.2


def train_tokenizer(corpus: list[str], vocab_size: int, chat: bool = False) -> PreTrainedTokenizerFast:
    texts = [open(path, encoding="utf-8").read() for path in sorted(glob.glob(os.path.join(ROOT, "prompts", "*.txt")))]
    for path in corpus:
        for pair in read_pairs(path):
            texts.extend(" " + text for text in (*pair.prompt, *pair.response_a, *pair.response_b))
    texts.extend(["User: Bot A: Bot B:" + "".join(DEFAULT_LABELS)] * 100)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + (CHAT_TOKENS if chat else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        chat_template=GEMMA_CHAT_TEMPLATE if chat else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--corpus", nargs="+", required=True, help="Arena-format files to train the tokenizer on.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--vocab_size", type=int, default=1024, help="Tokenizer vocabulary size.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    shape = dict(PRESETS[args.preset])
    model_type = shape.pop("model_type")
    tiny = args.preset.startswith("tiny")
    tokenizer = train_tokenizer(args.corpus, args.vocab_size, chat=model_type == "gemma2")
    shape.setdefault("vocab_size", len(tokenizer))
    config = AutoConfig.for_model(
        model_type, **shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if tiny else torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    if tiny:  # the output head (with tied embeddings, also the input embeddings)
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, TINY_HEAD_STD)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    tied = ", tied embeddings" if config.tie_word_embeddings else ""
    print(f"wrote a random {args.preset} {model_type} ({params / 1e6:.1f}M parameters, vocab {len(tokenizer)}{tied}) "
          f"to {args.out}")


if __name__ == "__main__":
    main()
