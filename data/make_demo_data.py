"""Writes a small arena-format dataset with a preference signal a tiny model can learn from the answers' wording.

Each battle's last turn decides it: an answer that hedges or refuses ("Sorry, I am not sure about this. Sorry, I
cannot help with that request.") loses to a direct one (one or two plain facts); when both or neither hedge, it is a
tie. Nothing else gives the label away: no marker, and A and B are built the same way in every class. 10% of the
labels are replaced by a random class, so a perfect model scores about 0.29 and the class prior about 1.10. About
15% of the rows have two or three turns (the earlier turns are plain on both sides).

Why this signal: a tiny random model learns from wording it can see, not from world knowledge. With hedges that
fill the whole answer, a 2-layer Llama (tools/make_random_model.py) learned it on each of the 6 seeds tried.

    python data/make_demo_data.py --out data/demo --rows 3000 --test_rows 500 --seed 0

Writes train.csv (with the one-hot winner columns) and test.csv (without), in the Kaggle layout.
"""

import argparse
import csv
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.io import atomic_open  # noqa: E402

SUBJECTS = ["the moon", "a volcano", "the ocean", "a violin", "the desert", "a glacier", "the forest", "a comet",
            "the river", "a lighthouse", "the city", "a bridge", "the garden", "a satellite", "the mountain", "a coral reef"]
QUESTIONS = ["What do you know about {s}?", "Can you describe {s}?", "Tell me something about {s}.",
             "Why is {s} interesting?", "Write two sentences about {s}.", "Explain {s} to a child."]
FACTS = ["{S} is shaped by slow forces over a long time.", "Many people travel far to see {s}.",
         "{S} changes with the seasons.", "Scientists study {s} to learn about the past.",
         "{S} can be seen from far away on a clear day.", "Stories about {s} are told in many cultures.",
         "{S} is home to surprising kinds of life.", "Light and weather make {s} look different every hour."]
HEDGES = ["Sorry, I am not sure about this.", "Sorry, I cannot help with that request.",
          "Sorry, as an AI I do not know enough to answer.", "Sorry, I am not able to answer that."]
FOLLOW_UPS = ["Thanks. Anything else?", "Can you say more?", "Interesting, go on.", "What else should I know?"]


def answer(rng: random.Random, subject: str, hedge: bool) -> str:
    facts = [f.format(s=subject, S=subject[0].upper() + subject[1:]) for f in rng.sample(FACTS, rng.randint(1, 2))]
    if hedge:
        return " ".join(rng.sample(HEDGES, rng.randint(2, 3)))
    return " ".join(facts)


def battle(rng: random.Random, row_id: int, noise: float) -> dict:
    subject = rng.choice(SUBJECTS)
    n_turns = rng.choices([1, 2, 3], weights=[0.85, 0.1, 0.05])[0]
    prompt, a, b = [], [], []
    for _ in range(n_turns - 1):  # earlier turns: both bots answer directly
        prompt.append(rng.choice(QUESTIONS + FOLLOW_UPS).format(s=subject))
        a.append(answer(rng, subject, False))
        b.append(answer(rng, subject, False))
    outcome = rng.randrange(3)  # 0: A wins (only B hedges), 1: B wins (only A hedges), 2: tie (both or neither)
    hedge_a, hedge_b = {0: (False, True), 1: (True, False), 2: rng.choice([(True, True), (False, False)])}[outcome]
    prompt.append(rng.choice(QUESTIONS).format(s=subject))
    a.append(answer(rng, subject, hedge_a))
    b.append(answer(rng, subject, hedge_b))
    label = rng.randrange(3) if rng.random() < noise else outcome
    return {"id": row_id, "model_a": "bot-x", "model_b": "bot-y", "prompt": json.dumps(prompt),
            "response_a": json.dumps(a), "response_b": json.dumps(b),
            "winner_model_a": int(label == 0), "winner_model_b": int(label == 1), "winner_tie": int(label == 2)}


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--test_rows", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = [battle(rng, 1000 + i, args.noise) for i in range(args.rows + args.test_rows)]
    train_columns = list(rows[0])
    write_csv(os.path.join(args.out, "train.csv"), rows[: args.rows], train_columns)
    write_csv(os.path.join(args.out, "test.csv"), rows[args.rows :], ["id", "prompt", "response_a", "response_b"])
    print(f"wrote {args.rows} training and {args.test_rows} test rows to {args.out}/")


if __name__ == "__main__":
    main()
