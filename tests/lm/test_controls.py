"""Key and drums labels: MuLaN's zero-shot reader and the TokenLM that reads them."""

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import load, save
from musiclm_pytorch.lm import TokenLM
from musiclm_pytorch.lm.controls import (
    CONTROL_CLASSES,
    ControlReader,
    drum_prompts,
    key_index,
    key_name,
    key_prompts,
    label_pmi,
)
from musiclm_pytorch.lm.transformer import SamplingConfig


def test_key_labels_round_trip_and_refuse_unknown_keys():
    assert key_index("C", "major") == 0 and key_index("B", "minor") == 23
    assert [key_name(key_index(t, m)) for t, m in (("D", "minor"), ("F#", "major"))] == ["D minor", "F# major"]
    assert len({key_name(i) for i in range(24)}) == 24
    with pytest.raises(ValueError, match="unknown key 'H' 'major'"):
        key_index("H", "major")
    with pytest.raises(ValueError, match=r"key label must be in \[0, 24\)"):
        key_name(24)
    assert [len(p) for p in (key_prompts(), drum_prompts())] == list(CONTROL_CLASSES)
    assert "music in D minor" in key_prompts()[key_index("D", "minor")]
    assert any("without drums" in p for p in drum_prompts()[0]) and any("with drums" in p for p in drum_prompts()[1])


def test_the_reader_reads_each_class_latent_as_its_class(tiny_mulan):
    torch.manual_seed(0)
    reader = ControlReader.from_mulan(tiny_mulan.eval())
    keys, drums = reader.class_latents
    assert keys.shape == (24, 128) and drums.shape == (2, 128)
    assert torch.allclose(keys.norm(dim=-1), torch.ones(24), atol=1e-5)
    # the class latents are the prompts' mean text latents: recompute one
    one = F.normalize(tiny_mulan.get_text_latents(raw_texts=key_prompts()[5]).mean(0), dim=-1)
    assert torch.allclose(keys[5], one, atol=1e-5)
    latents = torch.cat([keys[[3, 17]], drums[[1]]]) * 3.0  # the norm does not matter
    labels = reader.read(latents)
    assert labels.shape == (3, 2)
    assert labels[:2, 0].tolist() == [3, 17]
    assert labels[2, 1] == 1
    with pytest.raises(ValueError, match=r"latents must be \[B, 128\]"):
        reader.read(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"class latents for \(24, 2\) classes"):
        ControlReader([keys, keys])


def _lm(**kw) -> TokenLM:
    torch.manual_seed(0)
    return TokenLM(vocab_size=16, dim=32, depth=2, heads=2, dim_head=16, num_cond=2, cond_vocab=4, max_seq_len=64,
                   control_classes=(3, 2), **kw).eval()  # fmt: skip


def test_generation_with_controls_matches_the_guided_forward_pass():
    lm = _lm()
    with torch.no_grad():  # control vectors large enough to matter
        lm.control_emb.weight.normal_(0, 2.0)
    cond = torch.tensor([[1, 2], [3, 0]])
    controls = torch.tensor([[2, 1], [0, -1]])
    prime = torch.tensor([[3, 4, 5], [1, 1, 2]])
    greedy = SamplingConfig(temperature=1.0, top_k=1, cfg_scale=2.0)
    out = lm.generate(steps=10, cond_ids=cond, prime=prime, sampling=greedy, controls=controls)
    with torch.no_grad():  # guidance: the unconditioned branch has neither the ids nor the controls
        cond_logits = lm(out, cond, controls=controls)
        null_logits = lm(out, None)
    guided = null_logits + 2.0 * (cond_logits - null_logits)
    assert torch.equal(guided[:, 3:].argmax(-1), out[:, 3:])
    other = lm.generate(steps=10, cond_ids=cond, prime=prime, sampling=greedy, controls=torch.tensor([[0, 0], [1, 1]]))
    assert not torch.equal(other, out)  # the labels steer the ids
    with torch.no_grad():  # -1 is the control's null vector, the same as no controls at all
        assert torch.allclose(lm(out, cond, controls=torch.full((2, 2), -1)), lm(out, cond))
        assert not torch.allclose(lm(out, cond, controls=controls), lm(out, cond))
    # controls alone set the batch and are guided
    alone = lm.generate(steps=4, sampling=greedy, controls=controls)
    assert alone.shape == (2, 4)


def test_control_errors_name_the_input():
    lm = _lm()
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"controls must be \[B, 2\] = \[2, 2\]"):
        lm(ids, controls=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"control labels must be in \[-1, classes\) for classes \[3, 2\]"):
        lm(ids, controls=torch.tensor([[3, 0], [0, 0]]))
    plain = TokenLM(vocab_size=16, dim=32, depth=1, heads=2, dim_head=16, num_cond=0)
    with pytest.raises(ValueError, match="reads none"):
        plain(ids, controls=torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="control_classes must be positive counts"):
        _lm(control_drop_prob=1.0)
    with pytest.raises(ValueError, match="control_source must be 'prior' or 'text'"):
        _lm(control_source="audio")
    with pytest.raises(ValueError, match="reads no control labels"):
        plain.set_control_source("text")


def test_controls_and_their_source_survive_save_and_load(tmp_path):
    lm = _lm().set_control_source("text")
    save(lm, tmp_path / "lm.safetensors")
    again = load(tmp_path / "lm.safetensors", expected=TokenLM)
    assert again.control_classes == [3, 2] and again.control_source == "text"
    assert torch.equal(again.control_emb.weight, lm.control_emb.weight)
    assert _lm().control_source == "prior"


def test_the_labels_are_learned_and_dropped_in_training():
    """Each row repeats one id chosen by its first label (the second is noise): an LM that reads the labels
    learns the id; with the labels unknown it cannot, and training also fits that null state (the drops)."""
    torch.manual_seed(0)
    lm = _lm(control_drop_prob=0.3, cond_drop_prob=0.0).train()
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)

    def batch(n=32):
        labels = torch.stack([torch.randint(0, 3, (n,)), torch.randint(0, 2, (n,))], 1)
        return (5 + labels[:, :1]).expand(n, 12).contiguous(), labels

    for _ in range(120):
        ids, labels = batch()
        loss = lm.loss(ids, controls=labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    ids, labels = batch()
    with torch.no_grad():
        known = F.cross_entropy(lm(ids, controls=labels)[:, 0], ids[:, 0]).item()  # the first id: labels only
        unknown = F.cross_entropy(lm(ids, controls=torch.full_like(labels, -1))[:, 0], ids[:, 0]).item()
        wrong = F.cross_entropy(lm(ids, controls=labels.roll(1, 0))[:, 0], ids[:, 0]).item()
    assert known < 0.1, known
    assert unknown == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=0.25)  # the null: a guess among 3
    assert wrong > unknown


def test_label_pmi_against_counting_by_hand():
    counts = torch.tensor([[4.0, 0.0, 1.0], [0.0, 2.0, 2.0], [3.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    table = label_pmi(counts, labels, 3, smoothing=0.5)
    marginal = (counts.sum(0) + 0.5) / (counts.sum() + 1.5)
    rows0 = counts[[0, 2]].sum(0)
    assert torch.allclose(table[0], ((rows0 + 0.5) / (rows0.sum() + 1.5)).log() - marginal.log())
    assert table[0, 0] > 0 > table[0, 1]  # id 0 is typical of class 0, id 1 of class 1
    assert torch.equal(table[2], torch.zeros(3))  # no clip has class 2: no bias
    with pytest.raises(ValueError, match=r"counts must be \[N, V\] and labels \[N\]"):
        label_pmi(counts, labels[:2], 3)


def test_the_key_bias_is_kept_in_the_config():
    lm = _lm()
    assert lm.key_bias == 0.0
    again = TokenLM(**lm.set_key_bias(0.7).config)
    assert again.key_bias == 0.7
    with pytest.raises(ValueError, match="key_bias must be >= 0"):
        lm.set_key_bias(-1.0)
    with pytest.raises(ValueError, match="reads no control labels"):
        TokenLM(vocab_size=16, dim=32, depth=1, heads=2, dim_head=16, num_cond=0).set_key_bias(1.0)
