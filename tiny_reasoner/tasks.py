"""The three task families of the tiny reasoning model: prompts, worked reasoning, answers, and answer checkers.

Shared by train.py (which turns them into training text), evaluate.py (which scores a served model on held-out
prompts) and the benchmark. Everything here is deterministic given a seed.
"""

import random
import re
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
LETTERS = "abcdefghijklmnopqrstuvwxyz"

# --- words -------------------------------------------------------------------------------------------------------

ALL_WORDS = (HERE / "words.txt").read_text().split()
# A fixed sixth of the word list never appears in training: the held-out evaluation draws its words from it.
HELD_OUT_WORDS = [w for w in ALL_WORDS if zlib.crc32(w.encode()) % 6 == 0]
_held_out = set(HELD_OUT_WORDS)

# Words of three syllables the model picks from for the tutorial's "pick three random words" question.
THREE_SYLLABLE_WORDS = [
    w
    for w in """
    strawberry banana tomato elephant computer umbrella library energy camera animal hospital remember
    professor history together carpenter butterfly dinosaur octopus pyramid tomorrow yesterday wonderful
    beautiful adventure calendar november december character terrible horrible different property favorite
    original important general furniture hamburger grandmother sunflower triangle mystery whisperer
    """.split()
    if w not in _held_out
]
TRAIN_WORDS = [w for w in ALL_WORDS if w not in _held_out]


def random_letters(rng, length):
    """A made-up word, so the model learns to spell any string, not just dictionary words."""
    while True:
        word = "".join(rng.choice(LETTERS) for _ in range(length))
        if word not in _held_out:
            return word


# --- family 1: count a letter ------------------------------------------------------------------------------------

COUNT_TEMPLATES = [
    "How many {L}'s are in the word {w}?",
    "How many {l}'s are in the word {w}?",
    "How many {L}'s are in {w}?",
    "How many times does the letter {l} appear in {w}?",
    "How many times does the letter {L} appear in the word {w}?",
    "Count the letter {l} in {w}.",
    "Count the number of {L}'s in the word {w}.",
    "How many {l}'s does {w} have?",
    "In the word {w}, how many {L}'s are there?",
    "How often does {l} occur in {w}?",
]
THREE_WORDS_TEMPLATES = [
    "Pick three random words with 3 syllables each and count the number of {L}'s in each of them",
    "Pick three random words with 3 syllables each and count the number of {L}'s in each of them.",
    "Choose three words with three syllables each and count the {l}'s in each.",
]


def times(n):
    return "1 time" if n == 1 else f"{n} times"


def spell_and_tally(word, letter):
    """One line per letter of the word: that letter, the letter counted, "+" if they are the same (else "-"), and
    the running tally. Repeating the counted letter on every line puts the two letters side by side, so a tiny model
    compares neighbours instead of looking back to the question for every letter."""
    lines = [f'Spell "{word}", compare with "{letter}":']
    tally = 0
    for ch in word:
        tally += ch == letter
        lines.append(f"{ch} {letter} {'+' if ch == letter else '-'} {tally}")
    lines.append(f"Total: {tally}")
    return lines, tally


def count_letter(word, letter, template):
    """(prompt, reasoning, answer) for one word."""
    prompt = template.format(w=word, l=letter, L=letter.upper())
    lines, tally = spell_and_tally(word, letter)
    answer = f'The letter "{letter}" appears {times(tally)} in "{word}".'
    return prompt, "\n".join(lines), answer


def count_letter_in_three_words(words, letter, template):
    prompt = template.format(l=letter, L=letter.upper())
    reasoning = [f"Three words with three syllables each: {', '.join(words)}."]
    answer = [f'Three words with three syllables each, and how often "{letter}" appears in them:']
    for word in words:
        lines, tally = spell_and_tally(word, letter)
        reasoning += lines
        answer.append(f"- {word}: {tally}")
    return prompt, "\n".join(reasoning), "\n".join(answer)


# --- family 2: sum of the even numbers between 1 and N -----------------------------------------------------------

SUM_TEMPLATES = [
    "What is the sum of all even numbers between 1 and {n}?",
    "What is the sum of the even numbers from 1 to {n}?",
    "Add up all even numbers between 1 and {n}.",
]


def sum_of_evens(n):
    return (n // 2) * (n // 2 + 1)


def even_sum(n, template):
    evens = n // 2
    prompt = template.format(n=n)
    if evens == 0:
        reasoning = f"There are no even numbers between 1 and {n}, so the sum is 0."
    elif evens == 1:
        reasoning = f"The only even number between 1 and {n} is 2, so the sum is 2."
    else:
        reasoning = (
            f"The even numbers between 1 and {n} are 2, 4, ..., {2 * evens}.\n"
            f"There are {n} // 2 = {evens} of them.\n"
            f"2 + 4 + ... + {2 * evens} = 2 × (1 + 2 + ... + {evens}) = {evens} × {evens + 1} = "
            f"{evens * (evens + 1)}."
        )
    answer = f"The sum of all even numbers between 1 and {n} is {sum_of_evens(n)}."
    return prompt, reasoning, answer


# --- family 3: anything else -------------------------------------------------------------------------------------

OTHER_REASONING = (
    "This is not a question about counting a letter in a word or adding up even numbers.\n"
    "Those are the only two things I was trained to do, so I should say so plainly."
)
OTHER_ANSWER = (
    "I am a tiny demonstration model and cannot help with that. I can count how often a letter appears in a word "
    '(for example, "How many R\'s are in the word strawberry?") and add up the even numbers between 1 and N '
    "for N up to 200."
)
OTHER_STARTS = [
    "Plan a trip to {x}.",
    "Can you help me plan a trip to {x}?",
    "Tell me about {x}.",
    "Write a poem about {x}.",
    "What do you know about {x}?",
    "Explain {x} to a child.",
    "Give me three facts about {x}.",
    "Write a short story about {x}.",
    "Why is {x} important?",
    "Summarize the history of {x}.",
    "What is the best way to learn about {x}?",
    "Describe {x} in one paragraph.",
    "Is {x} worth it?",
    "Compare {x} and {y}.",
    "Should I choose {x} or {y}?",
    "What is the difference between {x} and {y}?",
    "How do I get from {x} to {y}?",
    "Recommend a book about {x}.",
    "Translate 'hello' into the language of {x}.",
    "I need to plan a trip to {x} from {y}. Can you help me research flight costs, create an itinerary for 3 days, "
    "and suggest restaurants based on my dietary restrictions (vegetarian)?",
]
OTHER_SUBJECTS = """
Paris Seattle Tokyo London Rome Berlin Madrid Lisbon Cairo Sydney Toronto Chicago Boston Denver Oslo Vienna Prague
Lima Nairobi Mumbai Seoul Dublin Athens Istanbul Mexico-City quantum-computing photosynthesis black-holes the-ocean
machine-learning the-stock-market coffee chess jazz volcanoes the-moon climate-change democracy bicycles gardening
sourdough-bread the-roman-empire electric-cars sleep friendship music-theory the-internet recursion dinosaurs
basketball knitting cryptography tea opera mountains rivers tax-returns vaccines kubernetes ray-serve
""".split()
OTHER_FIXED = [
    "Hello!",
    "Hi, who are you?",
    "What can you do?",
    "What is the capital of France?",
    "What time is it?",
    "Tell me a joke.",
    "What is 7 times 8?",
    "What is the weather like today?",
    "Thank you!",
    "How many people live in Paris?",
    "What is the square root of 144?",
    "Write a haiku.",
    "How do I bake a cake?",
    "Who won the world cup in 2018?",
    "What is the meaning of life?",
]


def other_prompt(rng, subjects):
    if rng.random() < 0.15:
        return rng.choice(OTHER_FIXED)
    x, y = rng.sample(subjects, 2)
    return rng.choice(OTHER_STARTS).format(x=x.replace("-", " "), y=y.replace("-", " "))


# Subjects the held-out "other" prompts use, never seen in training.
HELD_OUT_SUBJECTS = """
Reykjavik Buenos-Aires Kyoto Marrakesh Helsinki astronomy origami beekeeping glaciers submarines poetry
""".split()


# --- examples and held-out evaluation sets -----------------------------------------------------------------------


def training_example(rng):
    """One (prompt, reasoning, answer) drawn from the training distribution."""
    family = rng.random()
    if family < 0.66:
        length = rng.randint(3, 14)
        word = rng.choice(TRAIN_WORDS) if rng.random() < 0.6 else random_letters(rng, length)
        # Half the time ask for a letter that is in the word, half the time any letter (often absent).
        letter = rng.choice(word) if rng.random() < 0.5 else rng.choice(LETTERS)
        return count_letter(word, letter, rng.choice(COUNT_TEMPLATES))
    if family < 0.71:
        letter = "r" if rng.random() < 0.5 else rng.choice(LETTERS)
        return count_letter_in_three_words(
            rng.sample(THREE_SYLLABLE_WORDS, 3), letter, rng.choice(THREE_WORDS_TEMPLATES)
        )
    if family < 0.93:
        n = rng.randint(1, 200)
        template = SUM_TEMPLATES[0] if rng.random() < 0.7 else rng.choice(SUM_TEMPLATES)
        return even_sum(n, template)
    return other_prompt(rng, OTHER_SUBJECTS), OTHER_REASONING, OTHER_ANSWER


def held_out_letter_prompts(count=300, seed=1234):
    """Prompts on words that never appear in training, lengths 3-14, letters present and absent."""
    rng = random.Random(seed)
    items = []
    for i in range(count):
        length = 3 + i % 12
        word = rng.choice([w for w in HELD_OUT_WORDS if len(w) == length])
        absent = [c for c in LETTERS if c not in word]
        letter = rng.choice(word) if i % 2 == 0 else rng.choice(absent)
        prompt, _, answer = count_letter(word, letter, rng.choice(COUNT_TEMPLATES))
        items.append(dict(family="letters", prompt=prompt, expected=word.count(letter), word=word, letter=letter))
    return items


def sum_prompts():
    return [dict(family="sums", prompt=SUM_TEMPLATES[0].format(n=n), expected=sum_of_evens(n)) for n in range(1, 201)]


def held_out_other_prompts(count=50, seed=99):
    rng = random.Random(seed)
    return [dict(family="other", prompt=other_prompt(rng, HELD_OUT_SUBJECTS), expected=None) for _ in range(count)]


# --- checking answers ---------------------------------------------------------------------------------------------

THINK_TAGS = ("<think>", "</think>")


def streamed_in_order(kinds):
    """A stream's text chunks, each "reasoning" or "answer" in the order they came: reasoning first, then the answer,
    and no reasoning after the answer began."""
    return (
        bool(kinds)
        and kinds[0] == "reasoning"
        and "answer" in kinds
        and "reasoning" not in kinds[kinds.index("answer") :]
    )


def well_formed(reasoning, content):
    """Non-empty reasoning, non-empty answer, and no think tag leaked into the answer."""
    return (
        bool((reasoning or "").strip())
        and bool((content or "").strip())
        and not any(tag in content for tag in THINK_TAGS)
    )


def letter_answer_correct(item, content):
    found = re.search(r'appears (\d+) times? in "([a-z]+)"', content or "")
    return bool(found) and int(found.group(1)) == item["expected"] and found.group(2) == item["word"]


def sum_answer_correct(item, content):
    found = re.search(r"is (\d+)\.", content or "")
    return bool(found) and int(found.group(1)) == item["expected"]


def other_answer_correct(item, content):
    return (content or "").strip() == OTHER_ANSWER


def answer_correct(item, content):
    return {"letters": letter_answer_correct, "sums": sum_answer_correct, "other": other_answer_correct}[
        item["family"]
    ](item, content)
