"""Nothing of a job outlives it, and one live trainer per output directory (issue 14, item 2).

Reported: SIGKILL of a job's torchrun left its worker training (torch elastic starts workers in sessions of
their own, out of reach of the supervisor's killpg): `ns status` said FAILED while the orphan trained on, and
a rerun started a second trainer in the same directory. Real processes throughout: a real job on executor
none, a real parent-death signal, real torchrun + the real SFT entrypoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_sft_support import conversation_rows, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.common.process import start_ticks
from skills_cli.pipeline import run_cmd, wrap_arguments
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.store import JobState, Store
from skills_cli.training.components.run_lock import LOCK_NAME, Holder, TrainerLock

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running(pid: int) -> bool:
    return start_ticks(pid) is not None  # None: no such process, or a zombie (finished, not yet reaped)


def read_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.is_file() else ""
    return int(text) if text else None


# -- the supervisor: a job's processes die with it ------------------------------------------------------------


def test_child_in_a_new_session_dies_before_the_job_is_recorded_failed(tmp_path):
    """The main command starts a child in a session of its own (as torchrun does) and is SIGKILLed: by the
    time the job is FAILED, the child is gone too."""
    program = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        open("{tmp_path}/child.pid", "w").write(str(child.pid))
        open("{tmp_path}/main.pid", "w").write(str(os.getpid()))
        time.sleep(300)
    """)
    script = tmp_path / "main.py"
    script.write_text(program)
    run_cmd(ctx=wrap_arguments(f"{sys.executable} {script}"), expname="orphan", detach=True)
    main_pid = wait_for(lambda: read_pid(tmp_path / "main.pid"), 60, "the job's main process")
    child_pid = wait_for(lambda: read_pid(tmp_path / "child.pid"), 10, "the child")
    assert os.getsid(child_pid) == child_pid != os.getsid(main_pid)  # out of the supervisor's killpg's reach
    try:
        os.kill(main_pid, signal.SIGKILL)
        store = Store()
        (record,) = wait(store.jobs("orphan"), store, timeout=60)
        assert record.state is JobState.FAILED and record.exit_code == -signal.SIGKILL
        assert not running(child_pid), "the job is FAILED but its child still runs"
    finally:
        if running(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_commands_die_with_a_sigkilled_supervisor(tmp_path):
    """A supervisor that is SIGKILLed cannot stop anything; its commands die with it (PR_SET_PDEATHSIG), so
    the job `ns status` then reports FAILED ("supervisor process died") no longer runs either."""
    script = tmp_path / "main.py"
    script.write_text(f"import os, time\nopen({str(tmp_path / 'main.pid')!r}, 'w').write(str(os.getpid()))\n"
                      "time.sleep(300)\n")  # fmt: skip
    run_cmd(ctx=wrap_arguments(f"{sys.executable} {script}"), expname="headless", detach=True)
    main_pid = wait_for(lambda: read_pid(tmp_path / "main.pid"), 60, "the job's command")
    try:
        (record,) = Store().jobs("headless")
        os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: not running(main_pid), 10, "the command to die with its supervisor")
    finally:
        if running(main_pid):
            os.kill(main_pid, signal.SIGKILL)


# -- the parent-death signal ------------------------------------------------------------------------------------

ARMED_WORKER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from skills_cli.common.process import die_with_launcher
time.sleep({delay})
die_with_launcher()
print("armed", flush=True)
time.sleep(300)
"""


def start_launcher(tmp_path: Path, delay: float, launcher_lives: float) -> tuple[subprocess.Popen, int]:
    """A launcher that starts a torchrun-like worker (LOCAL_RANK set, own session) and lives `launcher_lives`
    seconds; returns the launcher and the worker's pid."""
    worker = tmp_path / "worker.py"
    worker.write_text(ARMED_WORKER.format(repo=str(REPO), delay=delay))
    launcher = textwrap.dedent(f"""
        import os, subprocess, sys, time
        worker = subprocess.Popen([sys.executable, {str(worker)!r}], start_new_session=True,
                                  env={{**os.environ, "LOCAL_RANK": "0"}},
                                  stdout=open({str(tmp_path / "worker.out")!r}, "w"), stderr=subprocess.STDOUT)
        print(worker.pid, flush=True)
        time.sleep({launcher_lives})
    """)
    process = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


def test_worker_dies_when_its_launcher_is_sigkilled(tmp_path):
    launcher, worker = start_launcher(tmp_path, delay=0, launcher_lives=300)
    try:
        wait_for(lambda: "armed" in (tmp_path / "worker.out").read_text(), 30, "the worker to arm")
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not running(worker), 10, "the worker to die with its launcher")
    finally:
        launcher.kill()
        if running(worker):
            os.kill(worker, signal.SIGKILL)


def test_worker_whose_launcher_died_before_it_armed_exits(tmp_path):
    """The race: torchrun dies while the worker is still starting (before prctl); no signal will ever come, so
    the worker notices it was orphaned and exits with one error line."""
    launcher, worker = start_launcher(tmp_path, delay=2, launcher_lives=0)
    try:
        launcher.wait()
        wait_for(lambda: not running(worker), 20, "the orphaned worker to exit")
        output = (tmp_path / "worker.out").read_text()
        assert "armed" not in output and "error: the launcher (torchrun) of this worker is gone" in output
    finally:
        if running(worker):
            os.kill(worker, signal.SIGKILL)


# -- the trainer lock --------------------------------------------------------------------------------------------


def lock_file(directory: Path, **fields) -> Path:
    holder = {"host": "node-7", "pid": 4242, "start_ticks": 1, "boot_id": "b", "started_at": 0.0, **fields}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps(holder))
    return directory / LOCK_NAME


def test_a_held_lock_refuses_a_second_trainer_and_release_frees_it(tmp_path):
    output = tmp_path / "run"
    first = TrainerLock.acquire(output)
    with pytest.raises(UserError) as refused:
        TrainerLock.acquire(output)
    assert f"output_dir {output} is in use by a trainer on host {os.uname().nodename} pid {os.getpid()}" in str(
        refused.value
    )
    first.release()
    assert not output.exists()  # nothing was written: the directory it created is gone again
    TrainerLock.acquire(output).release()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capfd):
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = Holder.this_process()
    path = lock_file(tmp_path / "run", host=mine.host, boot_id=mine.boot_id, pid=dead.pid, start_ticks=123)
    lock = TrainerLock.acquire(tmp_path / "run")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert (
        f"warning: taking over the stale trainer lock {path} of host {mine.host} pid {dead.pid}"
        in capfd.readouterr().err
    )
    lock.release()
    assert not path.exists() and (tmp_path / "run").is_dir()  # a directory it did not create stays


def test_a_dead_trainers_lock_still_held_open_by_a_process_it_forked_is_taken_over(tmp_path, capfd):
    """The trainer died, but a process it forked (a compile or data worker) still has the lock file open and
    so holds the flock: the lock is stale all the same (seen when torchrun was killed under load)."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from skills_cli.training.components.run_lock import TrainerLock\n"
        f"lock = TrainerLock.acquire(Path({str(tmp_path / 'run')!r}))\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(60)\n"  # the child keeps the inherited descriptor, and the flock with it
        "    os._exit(0)\n"
        "print(os.getpid(), child, flush=True)\n"
        "os._exit(0)\n"  # the trainer dies without releasing
    )
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    dead_pid, child_pid = (int(word) for word in trainer.stdout.readline().split())  # the child keeps the pipe
    trainer.wait(timeout=60)
    trainer.stdout.close()
    path = tmp_path / "run" / LOCK_NAME
    try:
        with pytest.raises(BlockingIOError):  # the forked child still holds the flock
            descriptor = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(descriptor)
        lock = TrainerLock.acquire(tmp_path / "run")
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert f"taking over the stale trainer lock {path} of host" in capfd.readouterr().err
        lock.release()
    finally:
        os.kill(child_pid, signal.SIGKILL)
    assert not running(dead_pid)


def test_a_reused_pid_does_not_keep_a_lock(tmp_path, capfd):
    """The recorded pid runs again, but as another process (a later start): stale."""
    mine = Holder.this_process()
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            lock_file(tmp_path / "run", host=mine.host, boot_id=mine.boot_id, pid=other.pid,
                      start_ticks=start_ticks(other.pid) - 1)  # fmt: skip
            TrainerLock.acquire(tmp_path / "run").release()
        finally:
            other.kill()
    assert f"taking over the stale trainer lock {tmp_path / 'run' / LOCK_NAME} of host {mine.host} pid {other.pid}" \
        in capfd.readouterr().err  # fmt: skip


def test_a_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
    path = lock_file(tmp_path / "run")
    with pytest.raises(UserError) as refused:
        TrainerLock.acquire(tmp_path / "run")
    message = str(refused.value)
    assert "in use by a trainer on host node-7 pid 4242" in message
    assert f"if host node-7 is dead, remove {path}" in message
    assert json.loads(path.read_text())["host"] == "node-7"  # left as it was


# -- all of it through torchrun and the real SFT entrypoint -----------------------------------------------------


def sft_argv(model: str, train: str, output: Path, steps: int) -> list[str]:
    return [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={output}",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2",
            "++policy.max_total_sequence_length=128", "++checkpointing.enabled=false",
            f"++sft.max_num_steps={steps}", "++sft.max_num_epochs=1000"]  # fmt: skip


def test_torchrun_sigkill_takes_its_worker_and_a_rerun_takes_over_the_lock(tmp_path, capfd):
    """A real SFT under torchrun holds its output_dir: a second trainer there is refused (one error line naming
    host and pid); SIGKILL of torchrun takes the worker with it; a rerun (the next --dependent_jobs copy) takes
    over the stale lock and trains. The second trainer and the rerun are the entrypoint's `main` in this
    process (a world of one, as without torchrun), which saves two interpreter starts."""
    from skills_cli.training.algorithms.sft.trainer import main as sft_main

    model, train = tiny_model(), write_jsonl(tmp_path / "train.jsonl", conversation_rows(16))
    output = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
         "skills_cli.training.algorithms.sft", *sft_argv(model, train, output, steps=100000)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        holder = wait_for(lambda: Holder.parse((output / LOCK_NAME).read_text()) if (output / LOCK_NAME).is_file()
                          else None, 120, "the worker to take the lock")  # fmt: skip
        worker = holder.pid
        assert os.getsid(worker) == worker != os.getsid(torchrun.pid)  # torch elastic's own session per worker
        capfd.readouterr()
        assert sft_main(sft_argv(model, train, output, steps=2)) == 2
        stderr = capfd.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: output_dir {output} is in use by a trainer on {holder.describe()}; "
                          "wait for it or stop it"], stderr  # fmt: skip
        assert running(worker)
        torchrun.kill()
        torchrun.wait()
        wait_for(lambda: not running(worker), 10, "the worker to die with torchrun")
        assert sft_main(sft_argv(model, train, output, steps=2)) == 0
        stderr = capfd.readouterr().err
        assert f"taking over the stale trainer lock {output / LOCK_NAME} of host {holder.host} pid {worker}" in stderr
        assert (output / "final_hf").is_dir()  # it trained and exported
        assert not (output / LOCK_NAME).exists()  # released at the end of the run
    finally:
        torchrun.kill()
        if worker and running(worker):
            os.kill(worker, signal.SIGKILL)
