#!/usr/bin/env bash
# Regenerates the corpus and the token set that the model work and the held-out evaluations use
# (data and intermediates are never committed). About 30 min on 2 CPU cores.
#   bash benchmarks/prepare_workdir.sh [WORKDIR]      # default /work
# Makes WORKDIR/data/synth10k (10,000 rendered 10 s clips, seed 0, train/val split) and
# WORKDIR/runs/tokens_spec (3,000 train + 300 val clips tokenized with the shipped model's
# codec, the committed semantic tokenizer and the committed MuLaN conditioning), and WORKDIR/data/test_s7:
# the sealed test set, 300 clips of compositions no training or validation clip shares (seed 7, no Bach
# chorales; all its rows land in its train.jsonl), on which no choice is ever made, and WORKDIR/runs/tokens_test_s7
# (its 300 clips tokenized: the acoustic oracle's test figures); and WORKDIR/data/test_s11, the sealed test split
# proper (1,000 clips, seed 11, its own test.jsonl read only through --split test; seventeenth session on),
# with WORKDIR/runs/tokens_test_s11/test.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/work}
MUSICLM=${MUSICLM:-.venv/bin/musiclm}
SHIPPED=src/musiclm_pytorch/pretrained/musiclm_small
if [ ! -f "$WORK/data/synth10k/val.jsonl" ]; then
    "$MUSICLM" data synth "$WORK/data/synth10k" --num-clips 10000 --seconds 10 --workers 2 --shards 500
fi
if [ ! -f "$WORK/data/synth10k/val_generated.jsonl" ]; then  # validation rows of generated compositions (valgen200)
    python3 -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]; \
open(sys.argv[2], 'w').writelines(json.dumps(r) + '\n' for r in rows if r['tags'].get('source_kind') == 'generated')" \
        "$WORK/data/synth10k/val.jsonl" "$WORK/data/synth10k/val_generated.jsonl"
fi
if [ ! -d "$WORK/runs/tokens_spec" ]; then
    "$MUSICLM" data tokenize --conditioning "$SHIPPED/conditioning.safetensors" \
        --semantic checkpoints/semantic_512/semantic_tokenizer.safetensors --codec "$SHIPPED/codec.safetensors" \
        --data "$WORK/data/synth10k" --out "$WORK/runs/tokens_spec" --max-clips 3000 --max-val-clips 300 --workers 1
fi
if [ ! -f "$WORK/data/test_s7/train.jsonl" ]; then
    "$MUSICLM" data synth "$WORK/data/test_s7" --num-clips 300 --seconds 10 --seed 7 --val-fraction 0 --bach-fraction 0 \
        --workers 2
fi
if [ ! -f "$WORK/runs/tokens_test_s7/train.pt" ]; then  # the test clips' true ids, for the acoustic oracle only
    "$MUSICLM" data tokenize --conditioning "$SHIPPED/conditioning.safetensors" \
        --semantic checkpoints/semantic_512/semantic_tokenizer.safetensors --codec "$SHIPPED/codec.safetensors" \
        --data "$WORK/data/test_s7" --out "$WORK/runs/tokens_test_s7" --max-clips 300 --max-val-clips 0 --workers 1
fi
if [ ! -f "$WORK/data/test_s11/test.jsonl" ]; then  # the sealed test split (1,000 clips, seed 11): headline figures only
    "$MUSICLM" data synth "$WORK/data/test_s11" --num-clips 1000 --seconds 10 --seed 11 --val-fraction 0 \
        --test-fraction 1 --bach-fraction 0 --workers 2
fi
if [ ! -f "$WORK/runs/tokens_test_s11/test.pt" ]; then  # its true ids: eval stage / eval acoustic --split test
    "$MUSICLM" data tokenize --conditioning "$SHIPPED/conditioning.safetensors" \
        --semantic "$SHIPPED/semantic_tokenizer.safetensors" --codec "$SHIPPED/codec.safetensors" \
        --data "$WORK/data/test_s11" --out "$WORK/runs/tokens_test_s11" --test --workers 1
fi
ls "$WORK/runs/tokens_spec" "$WORK/runs/tokens_test_s7" "$WORK/runs/tokens_test_s11"
