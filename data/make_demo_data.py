"""Writes a small arena-format dataset with a preference signal a tiny model can learn from the answers' wording,
and the true probabilities every label was drawn from, so the best possible score is known.

Each battle's last turn decides it, by how much each answer hedges. An answer is one to three sentences: plain facts
("The moon changes with the seasons."), hedges ("Sorry, I am not sure about this."), or (one answer in five)
hedges then facts; its hedge share h is its hedges over its sentences (0: direct, 1: a refusal). With d = h_b - h_a (how much more B hedges),
the true distribution is

    P(tie) = 0.9 * exp(-(d / 0.35)^2),   P(A) = (1 - P(tie)) * sigmoid(5 d),   P(B) = 1 - P(tie) - P(A)

and the label is drawn from it. So a direct answer beats a refusal almost surely (d = 1: P(A) 0.99), two direct
answers or two refusals are a tie at 0.9, and partial hedges give uncertain rows (d = 1/3: A 0.54, tie 0.36,
B 0.10). Nothing else gives the label away: no marker, and A and B are built the same way. About 15% of the rows
have two or three turns (the earlier turns are plain on both sides).

truth.csv holds every row's true distribution (`id` and the submission's three columns, readable as a teacher file
or a prediction file). The best possible log loss of a set of rows, its Bayes limit, is the mean entropy of their
true distributions (about 0.35 here); the class prior scores about 1.10.

Why this signal: a tiny random model learns from wording it can see, not from world knowledge. With hedges that
fill the whole answer, a 2-layer Llama (tools/make_random_model.py) learned "refusal loses" on each of the 6 seeds
tried; the partial hedges ask it to weigh how much of each answer hedges. With two answers in five mixed, the
demo recipe (next-token loss) stayed at the class prior for 400 steps (log loss 1.0985 on seed 0); with one in five
it learned (0.479 against a Bayes limit of 0.351 on the test suite's data).

    python data/make_demo_data.py --out data/demo --rows 3000 --test_rows 500 --seed 0

Writes train.csv (with the one-hot winner columns), test.csv (without) in the Kaggle layout, and truth.csv.
"""

import argparse
import csv
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.data import LABEL_COLUMNS  # noqa: E402
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

# The true distribution's shape (see the module docstring)
TIE_PEAK, TIE_WIDTH, WIN_SLOPE = 0.9, 0.35, 5.0
PURE_SHARE = 0.8  # answers that are all facts or all hedges; the others mix both


def facts(rng: random.Random, subject: str, n: int) -> list[str]:
    return [f.format(s=subject, S=subject[0].upper() + subject[1:]) for f in rng.sample(FACTS, n)]


def answer(rng: random.Random, subject: str, hedge: bool) -> str:
    """A direct answer (one or two facts) or a refusal (two or three hedges); the earlier turns are direct."""
    return " ".join(rng.sample(HEDGES, rng.randint(2, 3)) if hedge else facts(rng, subject, rng.randint(1, 2)))


def graded_answer(rng: random.Random, subject: str) -> tuple[str, float]:
    """The last turn's answer and its hedge share: direct or a refusal (PURE_SHARE, half each), or hedges then
    facts."""
    r = rng.random()
    if r < PURE_SHARE:
        hedge = r >= PURE_SHARE / 2
        return answer(rng, subject, hedge), float(hedge)
    n = rng.choice([2, 3])
    k = rng.randint(1, n - 1)
    return " ".join(rng.sample(HEDGES, k) + facts(rng, subject, n - k)), k / n


def true_distribution(hedge_a: float, hedge_b: float) -> tuple[float, float, float]:
    """P(A wins), P(B wins), P(tie) from the two hedge shares."""
    d = hedge_b - hedge_a
    tie = TIE_PEAK * math.exp(-((d / TIE_WIDTH) ** 2))
    a = (1 - tie) / (1 + math.exp(-WIN_SLOPE * d))
    return a, 1 - tie - a, tie


def entropy(p) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def battle(rng: random.Random, row_id: int) -> tuple[dict, tuple[float, float, float]]:
    subject = rng.choice(SUBJECTS)
    n_turns = rng.choices([1, 2, 3], weights=[0.85, 0.1, 0.05])[0]
    prompt, a, b = [], [], []
    for _ in range(n_turns - 1):  # earlier turns: both bots answer directly
        prompt.append(rng.choice(QUESTIONS + FOLLOW_UPS).format(s=subject))
        a.append(answer(rng, subject, False))
        b.append(answer(rng, subject, False))
    prompt.append(rng.choice(QUESTIONS).format(s=subject))
    (text_a, hedge_a), (text_b, hedge_b) = graded_answer(rng, subject), graded_answer(rng, subject)
    a.append(text_a)
    b.append(text_b)
    truth = true_distribution(hedge_a, hedge_b)
    label = rng.choices(range(3), weights=truth)[0]
    row = {"id": row_id, "model_a": "bot-x", "model_b": "bot-y", "prompt": json.dumps(prompt),
           "response_a": json.dumps(a), "response_b": json.dumps(b),
           **{column: int(label == i) for i, column in enumerate(LABEL_COLUMNS)}}
    return row, truth


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows, truths = zip(*(battle(rng, 1000 + i) for i in range(args.rows + args.test_rows)))
    write_csv(os.path.join(args.out, "train.csv"), rows[: args.rows], list(rows[0]))
    write_csv(os.path.join(args.out, "test.csv"), rows[args.rows :], ["id", "prompt", "response_a", "response_b"])
    truth_rows = [{"id": row["id"], **dict(zip(LABEL_COLUMNS, p))} for row, p in zip(rows, truths)]
    write_csv(os.path.join(args.out, "truth.csv"), truth_rows, ["id", *LABEL_COLUMNS])
    bayes = sum(map(entropy, truths[: args.rows])) / max(args.rows, 1)
    print(f"wrote {args.rows} training and {args.test_rows} test rows to {args.out}/, their true probabilities to "
          f"{args.out}/truth.csv (Bayes limit of train.csv: {bayes:.4f})")


if __name__ == "__main__":
    main()
