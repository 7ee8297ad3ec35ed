# The GPU check's cases, sourced by bundle.sh (here, CPU references) and check.sh (there, CUDA).
# CASES: "NAME FAMILY TOKENIZER MAKE-MODEL-OPTIONS"; FAMILY 'trained' is the demo model, which
# bundle.sh trains with DEMO_TRAIN and carries (make-model checkpoints are made again there and
# checked against the sha256 recorded here).
CASES=(
  "gpt_neo gpt_neo gpt2 --layers 2 --heads 4 --d-model 64 --d-mlp 128 --window 8 --seed 7"
  "qwen2 qwen2 qwen2 --layers 2 --heads 4 --kv-heads 2 --d-model 64 --d-mlp 128 --seed 7"
  "llama llama llama3-bos --layers 2 --heads 4 --kv-heads 2 --d-model 64 --d-mlp 128 --seed 7"
  "demo trained gpt2 -"
)
# A GPT-Neo like the demo's (2 layers, 4 heads, odd layer local), narrower and shorter trained so
# that it travels in a few MiB and trains in about a minute on one core.
DEMO_TRAIN="--d-model 64 --steps 80 --batch-size 16 --max-positions 256 --seed 1"
# One cell, small enough for seconds on CPU; the same on both sides.
ATTRIBUTE_ARGS="--feature EngFieldName --batches 3 --batch-size 8 --seed 5"
# The sweep check: the demo model, two cells of two batches, on DEVICE with GROUP ranks per unit.
# write_job FILE OUTPUT MODEL_DIR DEVICE GROUP
write_job() {
  cat >"$1" <<JOB
# Written by scripts/gpu/cases.sh (write_job) for the GPU check.
output = "$2"

[grid]
models = [1]
commandsets = [1]
features = ["EngTableName", "DefFieldName"]
use_novel_names = [false]
use_synonyms_field = [false]
use_synonyms_table = [false]

[settings]
num_fields = 2
batch_size = 8
batches = 2
top_n = 10
seed = 0
dtype = "float32"
device = "$4"
threads = 1
group_size = $5
any_architecture = true

[models.BM1]
cs1 = "$3"
tokenizer = "$3"
JOB
}
# mpirun inside a container: shared memory without cross-process copies, no UCX/verbs, as root.
MPIRUN_ARGS="--mca btl self,vader --mca btl_vader_single_copy_mechanism none --mca pml ob1 --bind-to none"
