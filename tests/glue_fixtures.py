"""Synthetic GLUE folders shaped like the real files, tiny models and tokenizers, made locally.

The layouts below are written from the real GLUE files (column order, header or not), not
from glue.py's table, so that the readers are checked against an independent description.
"""

import random
from pathlib import Path

import transformers
from transformers import AlbertTokenizer, BertModel, BertTokenizer

from conftest import TINY_CONFIGS, TRANSFORMERS_CLASSES, tiny_albert_config, tiny_bert_config

FILLER = ["the", "a", "movie", "film", "was", "is", "very", "quite", "story", "plot", "and", "it"]
KEYWORDS = ["awful", "great", "fine"]  # the word that gives the label away, by label index
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentence(rng, keyword, repeat=1):
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
    for _ in range(repeat):
        words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


# Per task: (train/dev header or None, row maker(a, b, label)), (test header, row maker(i, a, b)).
LAYOUTS = {
    "CoLA": ((None, lambda a, b, l: ["gj04", l, "", a]),
             ("id\tsentence", lambda i, a, b: [i, a])),
    "SST-2": (("sentence\tlabel", lambda a, b, l: [a, l]),
              ("index\tsentence", lambda i, a, b: [i, a])),
    "MRPC": (("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", lambda a, b, l: [l, "101", "102", a, b]),
             ("index\t#1 ID\t#2 ID\t#1 String\t#2 String", lambda i, a, b: [i, "101", "102", a, b])),
    "STS-B": (("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
               lambda a, b, l: ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", a, b, l]),
              ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
               lambda i, a, b: [i, "main-news", "headlines", "2015", "0001", "none", "none", a, b])),
    "QQP": (("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", lambda a, b, l: ["7", "1", "2", a, b, l]),
            ("id\tquestion1\tquestion2", lambda i, a, b: [i, a, b])),
    "MNLI": (("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
              "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
              lambda a, b, l: ["0", "31193", "31193n", "government", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
                               a, b, l, l]),
             ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
              "\tsentence2_parse\tsentence1\tsentence2",
              lambda i, a, b: [i, "1", "1n", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b])),
    "QNLI": (("index\tquestion\tsentence\tlabel", lambda a, b, l: ["0", a, b, l]),
             ("index\tquestion\tsentence", lambda i, a, b: [i, a, b])),
    "RTE": (("index\tsentence1\tsentence2\tlabel", lambda a, b, l: ["0", a, b, l]),
            ("index\tsentence1\tsentence2", lambda i, a, b: [i, a, b])),
    "WNLI": (("index\tsentence1\tsentence2\tlabel", lambda a, b, l: ["0", a, b, l]),
             ("index\tsentence1\tsentence2", lambda i, a, b: [i, a, b])),
}
LABELS = {
    "CoLA": ["0", "1"], "SST-2": ["0", "1"], "MRPC": ["0", "1"], "QQP": ["0", "1"], "WNLI": ["0", "1"],
    "MNLI": ["contradiction", "entailment", "neutral"], "QNLI": ["entailment", "not_entailment"],
    "RTE": ["entailment", "not_entailment"], "STS-B": None,
}
DEV_FILES = {"MNLI": ["dev_matched.tsv", "dev_mismatched.tsv"]}
TEST_FILES = {"MNLI": ["test_matched.tsv", "test_mismatched.tsv"]}


def labelled_example(rng, folder):
    """(text_a, text_b, label string, label index or score): the keyword decides the label."""
    labels = LABELS[folder]
    if labels is None:
        score = rng.randint(0, 4)
        a = sentence(rng, KEYWORDS[1], repeat=score) if score else sentence(rng, KEYWORDS[0])
        return a, sentence(rng, "fine"), f"{score + rng.random() * 0.5:.3f}", score
    k = rng.randrange(len(labels))
    return sentence(rng, KEYWORDS[k]), sentence(rng, rng.choice(FILLER)), labels[k], k


def write_task(root, folder, n_train=200, n_dev=60, n_test=30, seed=0):
    """A GLUE-format folder for one task; returns its path and the dev labels written."""
    rng = random.Random(seed)
    path = Path(root) / folder
    path.mkdir(parents=True, exist_ok=True)
    (header, row), (test_header, test_row) = LAYOUTS[folder]
    written = {}
    for name, n in [("train.tsv", n_train)] + [(f, n_dev) for f in DEV_FILES.get(folder, ["dev.tsv"])]:
        lines = [header] if header else []
        written[name] = []
        for _ in range(n):
            a, b, label, value = labelled_example(rng, folder)
            lines.append("\t".join(row(a, b, label)))
            written[name].append(value)
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in TEST_FILES.get(folder, ["test.tsv"]):
        lines = [test_header] + ["\t".join(test_row(str(i), *labelled_example(rng, folder)[:2])) for i in range(n_test)]
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, written


def bert_tokenizer(folder):
    vocab = {w: i for i, w in enumerate(SPECIAL + FILLER + KEYWORDS)}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_bert_folder(folder, layers=4):
    """A plain pretrained-style BERT folder (BertModel + tokenizer) as users download."""
    tokenizer = bert_tokenizer(folder)
    BertModel(tiny_bert_config(layers=layers, vocab_size=len(tokenizer), hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    return Path(folder)


def corpus(folder):
    rng = random.Random(0)
    path = Path(folder) / "corpus.txt"
    path.write_text("\n".join(sentence(rng, k) for k in KEYWORDS * 100) + "\n")
    return path


def sentencepiece_model(folder, prefix):
    """A word-level SentencePiece model of the fixture sentences, as ALBERT and DeBERTa-v2 read."""
    import sentencepiece as spm

    text = corpus(folder)
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(Path(folder) / prefix), vocab_size=64, model_type="word",
        hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>",
        bos_piece="[CLS]", eos_piece="[SEP]", user_defined_symbols=["[MASK]"], minloglevel=2,
    )
    text.unlink()
    (Path(folder) / f"{prefix}.vocab").unlink()


def tiny_albert_folder(folder, layers=4):
    from transformers import AlbertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sentencepiece_model(folder, "spiece")
    tokenizer = AlbertTokenizer.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    AlbertModel(tiny_albert_config(layers=layers, vocab_size=64, num_hidden_groups=2, inner_group_num=1,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    return folder


def roberta_tokenizer(folder):
    """A byte-level BPE learnt from the fixture sentences, special tokens where roberta-base has them."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    text = corpus(folder)
    bpe.train([str(text)], vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
              show_progress=False)
    text.unlink()
    bpe.save_model(str(folder))
    return transformers.RobertaTokenizer(vocab=str(Path(folder) / "vocab.json"), merges=str(Path(folder) / "merges.txt"))


def wordpiece_tokenizer(tokenizer_class):
    return tokenizer_class(vocab={w: i for i, w in enumerate(SPECIAL + FILLER + KEYWORDS)}, do_lower_case=True)


def tokenizer_for(kind, folder):
    """A tokenizer of the class the backbone table names, saved in `folder`."""
    if kind == "roberta":
        tokenizer = roberta_tokenizer(folder)
    elif kind == "deberta-v2":
        sentencepiece_model(folder, "spm")
        tokenizer = transformers.DebertaV2Tokenizer.from_pretrained(folder, pad_token="<pad>", unk_token="<unk>")
    elif kind == "modernbert":
        words = wordpiece_tokenizer(BertTokenizer)
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=words.backend_tokenizer, **{
            f"{name}_token": getattr(words, f"{name}_token") for name in ("unk", "sep", "pad", "cls", "mask")})
    else:
        tokenizer = wordpiece_tokenizer(getattr(transformers, {"distilbert": "DistilBertTokenizer",
                                                               "electra": "ElectraTokenizer"}[kind]))
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_folder(kind, folder, layers=4):
    """A plain pretrained-style folder (transformers' XModel + tokenizer) for any backbone."""
    if kind in ("bert", "albert"):
        return (tiny_bert_folder if kind == "bert" else tiny_albert_folder)(folder, layers)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_for(kind, folder)
    config = TINY_CONFIGS[kind](layers=layers, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    getattr(transformers, TRANSFORMERS_CLASSES[kind][0])(config).save_pretrained(folder)
    return folder
