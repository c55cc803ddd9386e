"""Focused unit tests of the pure building blocks: typed configs, time limits, mounts, job graphs,
continuation chains, shell quoting, cluster variables and env, and the store's `--run_after` resolution."""

from __future__ import annotations

import enum
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import ConfigError, convert, from_dict, to_dict
from skills_cli.pipeline.cluster import (
    ClusterConfig,
    DependencyType,
    expand_vars,
    parse_cluster_config,
)
from skills_cli.pipeline.jobs import (
    Command,
    Job,
    JobGraph,
    Mount,
    Resources,
    continuation_name,
    parse_time_limit,
    with_dependent_jobs,
)
from skills_cli.pipeline.shell import Raw, quote, quote_argv
from skills_cli.pipeline.store import JobRecord, JobState, Store


# -- typed_config ---------------------------------------------------------------------------------------
class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Inner:
    host: str
    port: int = 22


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    maybe: Inner | None = None  # noqa: UP007 (Optional spelled out on purpose)
    count: int = 0
    ratio: float = 1.0
    flag: bool = False
    color: Color = Color.RED
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    maybe_int: int | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")


def test_from_dict_builds_nested_dataclasses_and_converts():
    outer = from_dict(
        Outer,
        {
            "name": "x",
            "inner": {"host": "h", "port": "2222"},
            "maybe": {"host": "m"},
            "count": 3,
            "ratio": 2,
            "flag": "True",
            "color": "blue",
            "mode": "slow",
            "tags": ["a", 1],
            "limits": {"a": "5"},
        },
    )
    assert outer.inner == Inner("h", 2222)
    assert outer.maybe == Inner("m", 22)
    assert (outer.count, outer.ratio, outer.flag) == (3, 2.0, True)
    assert isinstance(outer.ratio, float)
    assert outer.color is Color.BLUE
    assert outer.mode == "slow"
    assert outer.tags == ["a", "1"]
    assert outer.limits == {"a": 5}
    assert outer.maybe_int is None
    assert to_dict(outer)["color"] == "blue" and to_dict(outer)["inner"] == {"host": "h", "port": 2222}


def test_from_dict_unknown_keys_are_listed_with_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"name": "x", "inner": {"host": "h"}, "nmae": 1, "zzz": 2}, where="cfg")
    message = str(info.value)
    assert "cfg: unknown keys 'nmae', 'zzz'" in message
    assert "valid keys: color, count, flag, inner, limits, maybe, maybe_int, mode, name, ratio, tags" in message


def test_from_dict_unknown_nested_key_names_the_nested_place():
    with pytest.raises(
        ConfigError, match=r"^cfg\.inner: unknown key 'prot' \(did you mean 'port'\?\); valid keys: host, port$"
    ):
        from_dict(Outer, {"name": "x", "inner": {"host": "h", "prot": 1}}, where="cfg")


def test_from_dict_missing_required_and_non_mapping():
    with pytest.raises(ConfigError, match=r"cfg: missing required key 'inner'"):
        from_dict(Outer, {"name": "x"}, where="cfg")
    with pytest.raises(ConfigError, match=r"cfg\.inner: expected a mapping, got str 'h'"):
        from_dict(Outer, {"name": "x", "inner": "h"}, where="cfg")


@dataclass(frozen=True)
class Tuned:  # nested defaults that differ from the nested classes' own (as DPO's policy.dtensor_cfg)
    inner: Inner = field(default_factory=lambda: Inner("tuned", 2200))
    deeper: Outer = field(default_factory=lambda: Outer("o", Inner("a", 1), count=5))


def test_a_nested_config_given_in_part_keeps_the_rest_of_its_default_instance():
    tuned = from_dict(Tuned, {"inner": {"port": "1"}, "deeper": {"inner": {"host": "b"}, "flag": True}})
    assert tuned.inner == Inner("tuned", 1)
    assert tuned.deeper == Outer("o", Inner("b", 1), count=5, flag=True)
    assert from_dict(Tuned, {}) == Tuned()


def test_from_dict_post_init_errors_become_config_errors():
    with pytest.raises(ConfigError, match=r"cfg: count must be >= 0"):
        from_dict(Outer, {"name": "x", "inner": {"host": "h"}, "count": -1}, where="cfg")


@pytest.mark.parametrize(
    "annotation, value",
    [
        (int, True),
        (int, False),
        (float, True),
        (bool, 1),
        (bool, 0),
        (bool, "yes"),
        (str, True),
        (int, 3.5),
        (int, 3.0),
        (int, "3.5"),
        (int, None),
        (list[int], "1,2"),
        (list[int], [True]),
    ],
)
def test_convert_rejects_lossy_or_wrong_kinds(annotation, value):
    with pytest.raises(ConfigError, match=r"^w"):
        convert(annotation, value, "w")


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        (int, 5, 5),
        (int, "-3", -3),
        (int, " 7 ", 7),
        (float, 2, 2.0),
        (float, "1e3", 1000.0),
        (bool, True, True),
        (bool, "false", False),
        (str, 5, "5"),
        (Optional[int], None, None),  # noqa: UP045 (the spelling under test)
        (int | None, "4", 4),
        (str | None, None, None),
        (tuple[int, ...], [1, "2"], (1, 2)),
        (list[str], ("a", "b"), ["a", "b"]),
    ],
)
def test_convert_accepts_and_converts(annotation, value, expected):
    result = convert(annotation, value, "w")
    assert result == expected and type(result) is type(expected)


def test_convert_optional_requires_a_value_when_not_optional():
    with pytest.raises(ConfigError, match=r"w: a value is required, got null"):
        convert(int | str, None, "w")


@pytest.mark.parametrize("value", ["--5", "-", "²", "1_000x"])
def test_convert_int_from_odd_strings_is_a_config_error(value):
    """Every bad int string is a ConfigError (a UserError), never a bare ValueError/traceback."""
    with pytest.raises(ConfigError, match=r"^w: expected int"):
        convert(int, value, "w")


def test_convert_literal_and_enum_choices():
    assert convert(Literal["fast", "slow"], "slow", "w") == "slow"
    with pytest.raises(ConfigError, match=r"w: 'medium' is not one of 'fast', 'slow'"):
        convert(Literal["fast", "slow"], "medium", "w")
    assert convert(Color, "red", "w") is Color.RED
    assert convert(Color, Color.BLUE, "w") is Color.BLUE
    with pytest.raises(ConfigError, match=r"w: 'RED' is not one of 'red', 'blue'"):
        convert(Color, "RED", "w")
    assert convert(DependencyType, "afterany", "w") is DependencyType.AFTERANY  # a str enum
    assert convert(Level, 2, "w") is Level.HIGH


@pytest.mark.parametrize(
    "annotation", [Literal[1, 2], Literal[0, 5], Level], ids=["literal-1-2", "literal-0-5", "int-enum"]
)
def test_convert_literal_and_int_enum_do_not_take_bools_for_ints(annotation):
    """`True == 1` in Python; the module promises `num_gpus: true` never becomes 1, so `true` must not
    match a Literal of ints or an IntEnum either."""
    for value in (True, False):
        with pytest.raises(ConfigError):
            convert(annotation, value, "w")


def test_convert_abstract_sequence_annotation():
    """Sequence[str] must convert like list[str] (get_origin gives collections.abc.Sequence)."""
    assert list(convert(Sequence[str], ["a", 1], "w")) == ["a", "1"]


# -- time limits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 1800),
        ("1:30", 90),
        ("4:00:00", 14400),
        ("04:05:06", 4 * 3600 + 5 * 60 + 6),
        ("100:00:00", 360000),
        ("1-0", 86400),
        ("2-03", 2 * 86400 + 3 * 3600),
        ("1-02:03", 86400 + 7200 + 180),
        ("1-02:03:04", 86400 + 7200 + 180 + 4),
        (" 4:00:00 ", 14400),
    ],
)
def test_parse_time_limit_formats(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "abc", "4h", "1:2:3:4", "-5", "1-", "-1:00", "1-2-3", "1:", ":30", "1-1:2:3:4", "1.5", "1:234"],
)
def test_parse_time_limit_invalid(text):
    with pytest.raises(UserError, match=r"invalid time limit .*use HH:MM:SS, D-HH:MM:SS or minutes"):
        parse_time_limit(text)


@pytest.mark.parametrize("text", ["0", "0:00:00", "0-0", "00:00"])
def test_parse_time_limit_refuses_zero(text):
    """Slurm reads a zero limit as "no limit at all" (and a local job ran unbounded): never what 0 meant."""
    with pytest.raises(UserError, match=r"invalid time limit .*longer than 0 seconds"):
        parse_time_limit(text)


def test_resources_validate_time_limit_and_more():
    assert Resources(time_limit="1-00:00:00").time_limit_seconds == 86400
    assert Resources().time_limit_seconds is None
    for kwargs in (
        {"time_limit": "soon"},
        {"nodes": 0},
        {"gpus_per_node": -1},
        {"memory": "lots"},
        {"partition": "a b"},
        {"cpus_per_task": 0},
    ):
        with pytest.raises(UserError):
            Resources(**kwargs)


# -- mounts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("/a:/b", Mount("/a", "/b", False)),
        ("/a:/b:ro", Mount("/a", "/b", True)),
        ("/a:/b:rw", Mount("/a", "/b", False)),
        ("/with space/x:/in side", Mount("/with space/x", "/in side", False)),
    ],
)
def test_mount_parse(text, expected):
    mount = Mount.parse(text)
    assert mount == expected
    assert Mount.parse(str(mount)) == mount


@pytest.mark.parametrize("text", ["/a", "", ":/b", "/a:", "/a:b", "/a:/b:xx", "/a:/b:ro:x", "/a:/b:"])
def test_mount_parse_invalid(text):
    with pytest.raises(UserError, match=r"invalid mount"):
        Mount.parse(text)


# -- job graphs -------------------------------------------------------------------------------------------
def job(name: str, after: tuple[str, ...] = (), after_any: tuple[str, ...] = ()) -> Job:
    return Job(name=name, commands=(Command(argv=("true",)),), after=after, after_any=after_any)


def test_job_graph_duplicate_names():
    with pytest.raises(UserError, match=r"two jobs are named 'a'"):
        JobGraph([job("a"), job("b"), job("a")])


def test_job_graph_unknown_dependency():
    with pytest.raises(UserError, match=r"job 'b' depends on unknown job 'zz'"):
        JobGraph([job("a"), job("b", after=("zz",))])
    with pytest.raises(UserError, match=r"job 'b' depends on unknown job 'yy'"):
        JobGraph([job("a"), job("b", after_any=("yy",))])


@pytest.mark.parametrize(
    "jobs, cycle",
    [
        ([job("a", after=("a",))], "a -> a"),
        ([job("a", after=("b",)), job("b", after=("a",))], "a -> b -> a"),
        (
            [job("x"), job("a", after=("c",)), job("b", after=("a",)), job("c", after_any=("b",))],
            "a -> c -> b -> a",
        ),
    ],
    ids=["self", "two", "three-mixed-edges"],
)
def test_job_graph_cycle_message_names_the_cycle(jobs, cycle):
    with pytest.raises(UserError) as info:
        JobGraph(jobs)
    assert str(info.value) == f"dependency cycle: {cycle}"


def test_job_graph_topological_order():
    jobs = [
        job("eval", after=("train",)),
        job("summary", after=("eval", "prep")),
        job("train", after=("prep",)),
        job("prep"),
        job("side"),
    ]
    graph = JobGraph(jobs)
    order = graph.order
    assert sorted(order) == sorted(j.name for j in jobs)
    for j in jobs:
        for upstream in j.dependencies:
            assert order.index(upstream) < order.index(j.name), order
    assert [j.name for j in graph] == order
    assert len(graph) == 5


def test_job_rejects_bad_names_and_gpu_oversubscription():
    for name in ("", "  ", "a/b", "a\nb", "a\tb"):
        with pytest.raises(UserError):
            job(name)
    with pytest.raises(UserError, match=r"ask for 2 GPUs but the job has 1 per node"):
        Job(
            name="j",
            commands=(Command(argv=("a",), name="x", gpus=1), Command(argv=("b",), name="y", gpus=1)),
            resources=Resources(gpus_per_node=1),
        )


# -- dependent jobs -------------------------------------------------------------------------------------
def test_with_dependent_jobs_zero_is_identity_and_negative_is_error():
    graph = JobGraph([job("a")])
    assert with_dependent_jobs(graph, 0) is graph
    with pytest.raises(UserError, match=r"dependent_jobs must be >= 0"):
        with_dependent_jobs(graph, -1)


def test_with_dependent_jobs_chains_copies_and_remaps_downstream():
    graph = JobGraph([job("prep"), job("train", after=("prep",)), job("report", after_any=("train",))])
    chained = with_dependent_jobs(graph, 2)
    assert continuation_name("train", 0) == "train" and continuation_name("train", 2) == "train-cont2"
    names = set(chained.jobs)
    assert names == {f"{base}{suffix}" for base in ("prep", "train", "report") for suffix in ("", "-cont1", "-cont2")}
    jobs = chained.jobs
    # each copy waits for the previous copy to end, however it ended
    for base in ("prep", "train", "report"):
        assert jobs[f"{base}-cont1"].after_any == (base,) and jobs[f"{base}-cont1"].after == ()
        assert jobs[f"{base}-cont2"].after_any == (f"{base}-cont1",) and jobs[f"{base}-cont2"].after == ()
    # downstream jobs wait for the last copy, keeping their edge type
    assert jobs["train"].after == ("prep-cont2",)
    assert jobs["report"].after_any == ("train-cont2",) and jobs["report"].after == ()
    assert jobs["prep"].dependencies == ()
    order = chained.order
    assert order.index("prep-cont2") < order.index("train") < order.index("train-cont2") < order.index("report")
    # the copies are the same work
    assert all(j.commands == graph.jobs[j.name.split("-cont")[0]].commands for j in chained)


# -- shell quoting ---------------------------------------------------------------------------------------
NASTY = [
    "",
    " ",
    "a b",
    "'",
    '"',
    "it's",
    'say "hi"',
    "$(touch PWNED)",
    "`touch PWNED`",
    "${HOME}",
    "$HOME",
    "\\",
    "\\n",
    "a\nb",
    "\t",
    "*",
    "?",
    "[a]",
    "~",
    "~root",
    "!",
    "!!",
    "-n",
    "--",
    ";",
    "&&",
    "|",
    ">x",
    "<x",
    "#c",
    "é ü 日本",
    "%s",
    "{a,b}",
    "a=b",
    "'\"'\"'",
    "\x01",
]


def test_quote_argv_round_trips_through_shlex():
    assert shlex.split(quote_argv(NASTY)) == NASTY
    for word in NASTY:
        assert shlex.split(quote(word)) == [word]


def test_quote_argv_round_trips_through_bash(tmp_path):
    """What bash itself receives is the same list of words, and nothing was evaluated."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = "printf '%s\\0' " + quote_argv(NASTY)
    result = subprocess.run(["bash", "-c", script], cwd=scratch, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split("\0")[:-1] == NASTY
    assert list(scratch.iterdir()) == []


def test_raw_passes_through_unquoted():
    assert quote(Raw("${SLURM_JOB_ID}")) == "${SLURM_JOB_ID}"
    assert quote("${SLURM_JOB_ID}") == "'${SLURM_JOB_ID}'"
    assert quote_argv(["echo", Raw("$X"), "$X"]) == "echo $X '$X'"
    out = subprocess.run(
        ["bash", "-c", quote_argv(["echo", Raw("$X"), "$X"])],
        capture_output=True,
        text=True,
        env={"X": "val", "PATH": "/usr/bin:/bin"},
        timeout=30,
    ).stdout
    assert out == "val $X\n"


# -- cluster variables and env ---------------------------------------------------------------------------
def test_expand_vars():
    env = {"HOME": "/home/me", "DATA": "/d"}
    assert expand_vars("${DATA}/x:/x", "w", env) == "/d/x:/x"
    assert expand_vars("$DATA/x", "w", env) == "$DATA/x"  # only ${VAR} is expanded
    assert expand_vars("/plain", "w", env) == "/plain"
    with pytest.raises(UserError, match=r"where: environment variable \$\{NOPE\} in '\$\{NOPE\}/x' is not set"):
        expand_vars("${NOPE}/x", "where", env)


def test_expand_vars_empty_value_is_kept_not_an_error():
    assert expand_vars("a${EMPTY}b", "w", {"EMPTY": ""}) == "ab"


def test_parse_cluster_config_expands_mounts_and_reports_unset(monkeypatch):
    monkeypatch.setenv("SKILLS_UNIT_DATA", "/data")
    monkeypatch.delenv("SKILLS_UNIT_UNSET", raising=False)
    config = parse_cluster_config({"executor": "none", "mounts": ["${SKILLS_UNIT_DATA}/m:/m"]}, "c")
    assert config.mounts == ["/data/m:/m"]
    with pytest.raises(UserError, match=r"SKILLS_UNIT_UNSET"):
        parse_cluster_config({"executor": "none", "mounts": ["${SKILLS_UNIT_UNSET}/m:/m"]}, "c")


def test_cluster_job_env():
    config = ClusterConfig(
        executor="none",
        name="c",
        env_vars=["HF_HOME=/x/hf", "TOKEN", "ABSENT", "EMPTY="],
        required_env_vars=["NEEDED"],
    )
    env = config.job_env({"TOKEN": "t0k", "NEEDED": "n", "OTHER": "o"})
    assert env == {"HF_HOME": "/x/hf", "TOKEN": "t0k", "EMPTY": "", "NEEDED": "n"}
    with pytest.raises(UserError) as info:
        config.job_env({"TOKEN": "t"})
    assert "cluster 'c' requires environment variables that are not set: NEEDED" in str(info.value)
    two = ClusterConfig(executor="none", name="c", required_env_vars=["A", "B", "C"])
    with pytest.raises(UserError, match=r"not set: A, C$"):
        two.job_env({"B": "b"})


def test_cluster_config_rejects_invalid_env_var_names():
    """An env var that no shell can export must be rejected when the config is loaded, as a UserError."""
    for entries in (["A-B=x"], ["1X"], ["has space=1"]):
        with pytest.raises(UserError):
            parse_cluster_config({"executor": "none", "env_vars": entries}, "c")


# -- store -----------------------------------------------------------------------------------------------
def record(uid: str, expname: str, name: str, state: JobState = JobState.PENDING, at: float = 0.0) -> JobRecord:
    return JobRecord(
        uid=uid,
        expname=expname,
        name=name,
        cluster="local",
        executor="none",
        state=state,
        submitted_at=at or time.time(),
    )


def test_store_latest_jobs_is_the_newest_submission_of_each_name(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.add_experiment("exp", "local", "none")
    store.add_job(record("1", "exp", "a", JobState.FAILED, at=100))
    store.add_job(record("2", "exp", "b", JobState.SUCCEEDED, at=101))
    store.add_job(record("3", "exp", "a", JobState.SUCCEEDED, at=102))
    store.add_job(record("4", "other", "a", JobState.FAILED, at=103))
    latest = store.latest_jobs("exp")
    assert {r.name: r.uid for r in latest} == {"a": "3", "b": "2"}
    assert [r.uid for r in store.jobs("exp")] == ["1", "2", "3"]
    assert store.latest_jobs("nothing") == []


def test_store_resolve_run_after(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.add_experiment("gen", "local", "none")
    store.add_experiment("empty", "local", "none")
    store.add_job(record("g1", "gen", "part", JobState.FAILED, at=1))
    store.add_job(record("g2", "gen", "part", JobState.SUCCEEDED, at=2))
    store.add_job(record("g3", "gen", "merge", at=3))
    assert sorted(r.uid for r in store.resolve_run_after(["gen"])) == ["g2", "g3"]
    assert store.resolve_run_after([]) == []
    with pytest.raises(UserError, match=r"--run_after 'nope': no experiment of that name \(known: gen, empty\)"):
        store.resolve_run_after(["gen", "nope"])
    with pytest.raises(UserError, match=r"--run_after 'empty': the experiment has no jobs"):
        store.resolve_run_after(["empty"])


def test_store_round_trips_records(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    original = record("u1", "exp", "name with 'quotes' and $(x)", JobState.RUNNING, at=5.0)
    original.depends_on, original.dependency_types = ["u0"], [DependencyType.AFTERANY.value]
    store.add_job(original)
    assert store.job("u1") == original
    store.update_job("u1", state=JobState.SUCCEEDED, exit_code=0)
    again = store.job("u1")
    assert again.state is JobState.SUCCEEDED and again.exit_code == 0 and again.depends_on == ["u0"]
    with pytest.raises(KeyError):
        store.update_job("u1", bogus=1)
    with pytest.raises(KeyError):
        store.job("missing")
