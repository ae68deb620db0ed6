"""longtail.integrations.hf: counts_from_dataset and ClassBalancedTrainer with a tiny randomly initialised BERT.

No downloads: the models are built from configs (HF_HUB_OFFLINE=1), the data are random token ids. The loss the
trainer computes on a batch is ClassBalancedLoss on the logits by hand; one SGD step with gradient accumulation
moves the weights by the gradient of the mean loss (not twice it); the recipe of docs/integrations.md gives the
same loss.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers (and huggingface_hub) are imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

from longtail import ClassBalancedLoss, class_counts
from longtail.integrations.hf import TRANSFORMERS_AVAILABLE, ClassBalancedTrainer, counts_from_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
NUM_LABELS = 3
VOCAB = 50
SEQ = 6
LABELS = [0] * 10 + [1] * 4 + [2] * 2  # 16 samples, imbalanced


# --- counts_from_dataset (no transformers needed) -------------------------------------------------------------


class _MapStyle(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class _ColumnDataset:
    """Stands for a datasets.Dataset: column_names, and dataset[column] gives the whole column."""

    def __init__(self, **columns):
        self.columns = columns
        self.column_names = list(columns)

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.columns[key]
        raise AssertionError("counts_from_dataset must read the column in one piece, not sample by sample")

    def __len__(self):
        return len(next(iter(self.columns.values())))


def test_counts_from_dataset_reads_each_kind_of_dataset_and_label():
    rows = [{"labels": y, "input_ids": [1, 2]} for y in LABELS]
    expected = torch.tensor([10, 4, 2])
    assert torch.equal(counts_from_dataset(rows, num_classes=3), expected)
    assert torch.equal(counts_from_dataset(_MapStyle(rows), num_classes=3), expected)
    assert torch.equal(counts_from_dataset(iter(rows), num_classes=3), expected)
    assert torch.equal(counts_from_dataset(_ColumnDataset(labels=LABELS), num_classes=3), expected)
    assert torch.equal(counts_from_dataset(_ColumnDataset(labels=torch.tensor(LABELS)), num_classes=3), expected)
    # the datasets convention "label", when there is no "labels"; numpy and tensor scalars
    assert torch.equal(counts_from_dataset([{"label": torch.tensor(y)} for y in LABELS], num_classes=3), expected)
    assert torch.equal(counts_from_dataset(_ColumnDataset(label=LABELS), num_classes=4), torch.tensor([10, 4, 2, 0]))
    assert torch.equal(counts_from_dataset([{"y": 1}, {"y": 1}], "y", num_classes=2), torch.tensor([0, 2]))
    # token classification: one label per token, -100 (padding, sub-word pieces) skipped, any lengths
    tokens = [{"labels": [0, 1, -100, 1]}, {"labels": [2]}, {"labels": [-100, 0]}]
    assert torch.equal(counts_from_dataset(tokens, num_classes=3), torch.tensor([2, 2, 1]))
    # multi-label: multi-hot rows
    multi = [{"labels": [1.0, 0.0, 1.0]}, {"labels": [0.0, 0.0, 1.0]}]
    assert torch.equal(counts_from_dataset(multi, num_classes=3), torch.tensor([1, 0, 2]))
    multi_hot = torch.tensor([[1.0, 0, 1], [0, 0, 1]])
    assert torch.equal(counts_from_dataset(multi, num_classes=3), class_counts(multi_hot, 3))


def test_counts_from_dataset_explains_what_it_cannot_read():
    with pytest.raises(KeyError, match="neither a 'labels' nor a 'label' key"):
        counts_from_dataset([{"target": 0}], num_classes=2)
    with pytest.raises(KeyError, match="sample 0 has no 'target' key; its keys are \\['labels'\\]"):
        counts_from_dataset([{"labels": 0}], "target", num_classes=2)
    with pytest.raises(TypeError, match="sample 0 is a tuple"):
        counts_from_dataset([(torch.zeros(2), 0)], num_classes=2)
    with pytest.raises(TypeError, match="got dict"):
        counts_from_dataset({"train": [{"labels": 0}]}, num_classes=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        counts_from_dataset([{"labels": 2}], num_classes=2)
    with pytest.raises(ValueError, match="no samples"):
        counts_from_dataset([], num_classes=2)


def test_counts_from_a_real_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    from datasets.table import InMemoryTable

    # Built from a table with its fingerprint given, not by Dataset.from_dict: datasets 5.2 fails to fingerprint
    # (dill-pickle) a new table next to pyarrow 26 here ("Can't pickle <class 'MonthDayNano'>"), not what is tested.
    ds = datasets.Dataset(InMemoryTable.from_pydict({"label": LABELS, "text": ["x"] * len(LABELS)}), fingerprint="t")
    assert torch.equal(counts_from_dataset(ds, num_classes=3), torch.tensor([10, 4, 2]))
    assert torch.equal(counts_from_dataset(ds.with_format("torch"), "label", num_classes=3), torch.tensor([10, 4, 2]))


# --- the Trainer ---------------------------------------------------------------------------------------------------

needs_transformers = pytest.mark.skipif(not TRANSFORMERS_AVAILABLE, reason="needs transformers (longtail[hf])")


def _bert(num_labels: int = NUM_LABELS, token: bool = False, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return (BertForTokenClassification if token else BertForSequenceClassification)(config)


def _rows(labels, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(labels), SEQ), generator=gen)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": torch.tensor(y)}
            for i, y in enumerate(labels)]


def _args(tmp_path, **kwargs):
    from transformers import TrainingArguments

    options = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=3, per_device_train_batch_size=8,
                   per_device_eval_batch_size=64, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                   dataloader_pin_memory=False, seed=0)
    options.update(kwargs)
    return TrainingArguments(**options)


def _batch(rows):
    from transformers import default_data_collator

    return default_data_collator(rows)


@needs_transformers
def test_the_trainers_loss_is_the_class_balanced_loss_of_the_logits(tmp_path):
    model, rows = _bert(), _rows(LABELS)
    trainer = ClassBalancedTrainer(model=model, args=_args(tmp_path), train_dataset=rows, beta=0.99,
                                   loss="softmax_focal", gamma=1.0)
    # the counts were taken from train_dataset, C from model.config.num_labels
    assert torch.equal(trainer.criterion.counts, torch.tensor([10, 4, 2]))
    by_hand = ClassBalancedLoss([10, 4, 2], beta=0.99, loss="softmax_focal", gamma=1.0)
    assert torch.equal(trainer.criterion.weight, by_hand.weight)

    batch = _batch(rows[6:14])
    batch["labels"][0] = -100  # ignored, as by Hugging Face's own losses
    model.eval()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    assert "labels" in batch  # the caller's batch is left as it was
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(loss, by_hand(logits, batch["labels"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(outputs.logits, logits)
    assert outputs.get("loss") is None  # the model was not asked for its own loss

    # beta = 0 is the unweighted loss: the model's own cross-entropy
    plain = ClassBalancedTrainer(model=model, args=_args(tmp_path), class_counts=[10, 4, 2], beta=0.0)
    with torch.no_grad():
        own = model(**batch).loss
    torch.testing.assert_close(plain.compute_loss(model, batch), own, rtol=1e-6, atol=0)


@pytest.mark.slow
@needs_transformers
def test_training_steps_with_gradient_accumulation_follow_the_mean_loss(tmp_path):
    import transformers

    from longtail.integrations.hf import _unscaled_accumulation

    if _unscaled_accumulation(transformers.__version__):
        pytest.skip(f"transformers {transformers.__version__} does not scale a custom loss for gradient accumulation")
    rows = _rows([0] * 6 + [1] + [2])  # 8 samples: two micro-batches of 4, no ignored label
    model = _bert(seed=3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    criterion = ClassBalancedLoss(counts_from_dataset(rows, num_classes=3), beta=0.999)
    batch = _batch(rows)
    model.zero_grad()
    criterion(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
              batch["labels"]).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    lr = 0.5
    args = _args(tmp_path, max_steps=1, per_device_train_batch_size=4, gradient_accumulation_steps=2, optim="sgd",
                 learning_rate=lr, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0)
    trainer = ClassBalancedTrainer(model=model, args=args, train_dataset=rows, beta=0.999)
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    # Two micro-batches of 4 labelled samples: the mean of their means is the mean over all 8, whatever the order.
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.detach(), before[name] - lr * grads[name], rtol=1e-4, atol=1e-6)
    moved = [name for name in grads if not torch.equal(model.get_parameter(name), before[name])]
    assert "classifier.weight" in moved

    # a few more steps, then the evaluation loss (one batch) is the class-balanced loss of the eval set
    trainer.args.max_steps = 4
    trainer.train()
    assert trainer.state.global_step == 4
    eval_rows = _rows([0, 1, 2, 2, 1], seed=9)
    metrics = trainer.evaluate(eval_rows)
    model.eval()
    eval_batch = _batch(eval_rows)
    with torch.no_grad():
        logits = model(input_ids=eval_batch["input_ids"], attention_mask=eval_batch["attention_mask"]).logits
    assert metrics["eval_loss"] == pytest.approx(float(trainer.criterion(logits, eval_batch["labels"])), rel=1e-5)


@needs_transformers
def test_token_classification_and_label_smoothing(tmp_path):
    model = _bert(token=True)
    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(0, NUM_LABELS, (4, SEQ), generator=gen)
    labels[:, -2:] = -100  # padding
    rows = [{"input_ids": torch.randint(1, VOCAB, (SEQ,), generator=gen), "labels": labels[i]} for i in range(4)]
    trainer = ClassBalancedTrainer(model=model, args=_args(tmp_path, label_smoothing_factor=0.1), train_dataset=rows,
                                   beta=0.9)
    assert torch.equal(trainer.criterion.counts, class_counts(labels, NUM_LABELS))
    assert trainer.criterion.label_smoothing == 0.1
    batch = _batch(rows)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits  # (N, L, C)
    by_hand = ClassBalancedLoss(class_counts(labels, NUM_LABELS), beta=0.9, label_smoothing=0.1)
    expected = by_hand(logits.reshape(-1, NUM_LABELS), labels.reshape(-1))
    torch.testing.assert_close(trainer.compute_loss(model, batch), expected, rtol=1e-6, atol=0)


@needs_transformers
def test_bad_arguments_are_refused(tmp_path):
    model = _bert()
    with pytest.raises(ValueError, match="needs class_counts= or a train_dataset"):
        ClassBalancedTrainer(model=model, args=_args(tmp_path))
    with pytest.raises(ValueError, match="pass no compute_loss_func"):
        ClassBalancedTrainer(model=model, args=_args(tmp_path), class_counts=[1, 1, 1],
                             compute_loss_func=lambda *a, **k: 0)
    with pytest.raises(ValueError, match="either criterion= or class_counts="):
        ClassBalancedTrainer(model=model, args=_args(tmp_path), class_counts=[1, 1, 1], criterion=torch.nn.Identity())
    with pytest.raises(ValueError, match="give the loss its own label_smoothing="):
        ClassBalancedTrainer(model=model, args=_args(tmp_path, label_smoothing_factor=0.1),
                             criterion=ClassBalancedLoss([1, 1, 1]))
    trainer = ClassBalancedTrainer(model=model, args=_args(tmp_path), class_counts=[5, 3])  # 2 counts, 3 logits
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        trainer.compute_loss(model, _batch(_rows([0, 1])))


@needs_transformers
def test_the_documented_recipe_gives_the_same_loss(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (recipe,) = [b for b in blocks if "class WeightedTrainer(Trainer)" in b]
    namespace: dict = {}
    exec(compile(recipe, str(DOC), "exec"), namespace)
    model, rows = _bert(), _rows(LABELS)
    recipe_trainer = namespace["WeightedTrainer"](model=model, args=_args(tmp_path), class_counts=[10, 4, 2])
    ours = ClassBalancedTrainer(model=model, args=_args(tmp_path), class_counts=[10, 4, 2], beta=0.999)
    batch = _batch(rows[:8])
    model.eval()
    torch.testing.assert_close(recipe_trainer.compute_loss(model, batch), ours.compute_loss(model, batch))
    assert recipe_trainer.model_accepts_loss_kwargs is False


@pytest.mark.slow
def test_without_the_frameworks_the_modules_import_and_the_classes_say_what_to_install():
    """Both integration modules (so pytest's doctest collection of src/longtail too) import without their framework."""
    script = textwrap.dedent("""
        import sys
        for name in ["transformers", "lightning", "lightning.pytorch", "pytorch_lightning"]:
            sys.modules[name] = None  # an import of it raises ImportError
        from longtail.integrations import hf, lightning
        assert not hf.TRANSFORMERS_AVAILABLE and not lightning.LIGHTNING_AVAILABLE
        assert hf.counts_from_dataset([{"labels": 1}], num_classes=2).tolist() == [0, 1]
        for make, extra in [(hf.ClassBalancedTrainer, "longtail[hf]"), (lightning.CDBCallback, "longtail[lightning]")]:
            try:
                make()
            except ImportError as error:
                assert extra in str(error), error
            else:
                raise AssertionError(f"{make.__name__}() without its framework did not raise")
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
