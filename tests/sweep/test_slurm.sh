#!/usr/bin/env bash
# test_slurm.sh BIN TOKENIZERS: slurm/sweep.sbatch on a real single-node SLURM cluster that this test
# starts on loopback (munged, slurmctld, slurmd from Debian's slurm-wlm and munge; private ports and
# state under a temporary folder). The batch script runs a sweep with 2 tasks; the test sends it the
# pre-emption warning (SIGUSR1 to the batch shell, as --signal=B:USR1@120 does); the script has the
# ranks stop between units and requeues the job; the requeued job resumes; the result equals an
# uninterrupted run's. Then slurm/sweep-array.sbatch as a 3-task array (one shard each) into one
# folder: equal to the same. Every daemon started here is stopped on exit. Exit 77 (skipped) without SLURM.
set -euo pipefail
bin=$(realpath "$1")
tokenizers=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3

for c in munged munge slurmctld slurmd sbatch scontrol scancel sinfo srun; do
  command -v "$c" >/dev/null || { echo "SKIP: $c not installed (apt-get install slurm-wlm munge)"; exit 77; }
done

T=$(mktemp -d /tmp/teap-slurm.XXXXXX)
chmod 755 "$T"
daemons=()
fail() {
  echo "FAIL: $*"
  for f in "$T"/job-*.out "$T"/arr-*.out "$T"/slurmctld.log "$T"/slurmd.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -40 "$f"; }
  done
  exit 1
}
cleanup() {
  set +e
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${jobid:-}" ]; then
    scancel "$jobid" 2>/dev/null
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -j "$jobid" 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # slurmd, slurmctld, munged: SIGTERM, then SIGKILL for any that is still there after 10 s
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do kill "${daemons[i]}" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${daemons[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${daemons[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Two free private ports.
read -r port_ctld port_d < <($py -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

# munge: its own key and socket.
mkdir -p "$T/munge-key" "$T/munge" "$T/state" "$T/spool"
chmod 700 "$T/munge-key"
chmod 755 "$T/munge"
dd if=/dev/urandom of="$T/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge-key/munge.key"
sock=$T/munge/munge.sock
munged -F -f --socket="$sock" --key-file="$T/munge-key/munge.key" --pid-file="$T/munge/munged.pid" \
  --seed-file="$T/munge/munged.seed" --log-file="$T/munge/munged.log" >"$T/munged.out" 2>&1 &
daemons+=($!)
for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
munge -S "$sock" -n | unmunge -S "$sock" >/dev/null || fail "munged does not answer: $(cat "$T/munged.out")"

cpus=$(nproc)
((cpus < 2)) && cpus=2
cat >"$T/slurm.conf" <<EOF
ClusterName=teaptest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port_ctld
SlurmdPort=$port_d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$T/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 &
daemons+=($!)
slurmd -D -N localhost -f "$SLURM_CONF" >"$T/slurmd.out" 2>&1 &
daemons+=($!)
for i in $(seq 1 150); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
  ((i == 150)) && fail "the node did not come up: $(sinfo 2>&1; tail -5 "$T/slurmctld.out" "$T/slurmd.out")"
  sleep 0.2
done

# The sweep: 4 cells x 8 batches of a d_model 128 model, and its uninterrupted result (one rank).
"$bin" make-model --family gpt_neo --layers 4 --heads 4 --d-model 128 --vocab-from "$tokenizers/gpt2" --seed 1 \
  --out "$T/model" >/dev/null
write_job() {
  cat >"$1" <<EOF
output = "$2"
[grid]
features = ["EngTableName", "EngFieldName"]
use_novel_names = [false, true]
[settings]
batch_size = 16
batches = 8
threads = 1
[models.BM1]
cs1 = "$T/model"
tokenizer = "$T/model"
EOF
}
total=32
write_job "$T/ref.toml" "$T/ref"
write_job "$T/job.toml" "$T/out"
"$bin" run "$T/ref.toml" >/dev/null 2>&1 || fail "the reference run failed"

# srun starts the MPI ranks through PMIx where SLURM has that plugin, else mpirun does.
if srun --mpi=list 2>&1 | grep -qw pmix; then
  launch="TEAP_LAUNCHER=srun,TEAP_SRUN_ARGS=--mpi=pmix"
else
  launch="TEAP_LAUNCHER=mpirun,TEAP_MPIRUN_ARGS=--allow-run-as-root --oversubscribe"
fi
jobid=$(cd "$T" && sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$T/job-%j.out" \
  --export="ALL,TINYSQL_EAP=$bin,$launch" "$root/slurm/sweep.sbatch" "$T/job.toml")
echo "submitted job $jobid ($launch)"

units() { find "$T/out/units" -name 'b*.h5' 2>/dev/null | wc -l; }
state() { scontrol show job "$jobid" 2>/dev/null | grep -oE 'JobState=[A-Z_]+|Restarts=[0-9]+' | tr '\n' ' '; }
for i in $(seq 1 600); do
  (($(units) >= 4)) && break
  case $(state) in *RUNNING*|*PENDING*|*CONFIGURING*) ;; *) fail "job $jobid: $(state) before any units" ;; esac
  ((i == 600)) && fail "no units after 60 s: $(state)"
  sleep 0.1
done
# The warning SLURM sends before a time limit (--signal=B:USR1@120): to the batch shell only.
scancel --signal=USR1 --batch "$jobid"
echo "signalled job $jobid with $(units) units done"

pending=0
for i in $(seq 1 900); do
  s=$(state)
  case $s in
    *COMPLETED*) break ;;
    *PENDING*Restarts=[1-9]*)
      # SLURM holds a requeued job for about two minutes (BeginTime); let it start sooner, but not
      # within seconds of the requeue, when slurmd still refuses the job's revoked credential.
      pending=$((pending + 1))
      if ((pending == 40)); then scontrol update JobId="$jobid" StartTime=now; fi ;;
    *RUNNING*|*PENDING*|*COMPLETING*|*CONFIGURING*|*REQUEUE*) ;;
    *) fail "job $jobid ended as: $s" ;;
  esac
  ((i == 900)) && fail "job $jobid not complete after 90 s: $s"
  sleep 0.1
done
s=$(state)
echo "job $jobid: $s"
[[ $s == *Restarts=1* ]] || fail "expected one requeue: $s"

log=$T/job-$jobid.out
grep -q "caught SIGUSR1" "$log" || fail "the batch script did not catch SIGUSR1"
grep -q "stopped by a signal" "$log" || fail "the run did not stop on the signal"
grep -q "requeueing job $jobid" "$log" || fail "the batch script did not requeue"
grep -q "(restart 1)" "$log" || fail "the requeued job did not start again"
grep -q "sweep complete" "$log" || fail "the requeued job did not complete the sweep"
# first run: k units, stopped; the requeued run: the total - k others, none twice
counts() { grep -oE '[0-9]+ units done now, [0-9]+ before' "$log" | sed -n "$1p" | grep -oE '[0-9]+' | tr '\n' ' '; }
read -r now1 before1 <<<"$(counts 1)"
read -r now2 before2 <<<"$(counts 2)"
echo "first run: $now1 units (of $total); after the requeue: $now2 units, $before2 before"
((before1 == 0 && now1 >= 4 && now1 < total)) || fail "first run: $now1 done, $before1 before"
((before2 == now1 && now2 + before2 == total)) || fail "requeued run: $now2 done, $before2 before"

PYTHONPATH=$here $py -c "
import sys, sweeplib
n = sweeplib.compare_sweeps(sys.argv[1], sys.argv[2], exact=True)
print(f'{n} units equal the uninterrupted run')
" "$T/ref" "$T/out" || fail "the resumed sweep differs from the uninterrupted run"

# The job-array variant: 3 one-rank tasks, each its own shard, one output folder.
write_job "$T/arr.toml" "$T/arr"
jobid=$(cd "$T" && sbatch --parsable --array=0-2 --cpus-per-task=1 --output="$T/arr-%A_%a.out" \
  --export="ALL,TINYSQL_EAP=$bin" "$root/slurm/sweep-array.sbatch" "$T/arr.toml")
echo "submitted array job $jobid"
for i in $(seq 1 600); do
  [ -z "$(squeue -h -j "$jobid" 2>/dev/null)" ] && break
  ((i == 600)) && fail "array job $jobid not done after 60 s: $(squeue -j "$jobid")"
  sleep 0.1
done
for k in 0 1 2; do
  grep -q "shard $k/3 complete" "$T/arr-${jobid}_$k.out" || fail "array task $k: $(cat "$T/arr-${jobid}_$k.out")"
done
[ "$(grep -h -oE '[0-9]+ units done now' "$T"/arr-"$jobid"_*.out | awk '{s += $1} END {print s}')" = $total ] ||
  fail "the array tasks did not compute $total units between them"
PYTHONPATH=$here $py -c "
import sys, sweeplib
n = sweeplib.compare_sweeps(sys.argv[1], sys.argv[2], exact=True)
print(f'array job: {n} units equal the uninterrupted run')
" "$T/ref" "$T/arr" || fail "the array job's sweep differs from the uninterrupted run"
echo "ok"
