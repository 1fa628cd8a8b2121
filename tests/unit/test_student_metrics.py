"""The specialists' metrics and trivial baselines on hand-made targets."""

import pytest

from mycelium.programs.examples import targets
from mycelium.records.programs import COMPONENTS, Node, Pointer, Program
from mycelium.students.metrics import Baselines, score

Q = "Ann has 12 apples and buys 3 bags of 4 apples. She eats 2 apples. How many apples does she have now?"


def _program() -> Program:
    def text(s: str, name: str) -> Pointer:
        i = Q.index(s)
        return Pointer(kind="text", value=s, span=(i, i + len(s)), span_text=s, name=name)

    nodes = [Node(index=0, step=0, template="T1", labels=["mul"], operands=[text("3", "n0"), text("4", "n1")],
                  canonical="n0 * n1", value="12"),
             Node(index=1, step=1, template="T0", labels=["add"], operands=[text("12", "n2"), Pointer(kind="node", value="12", node=0)],
                  canonical="n2 + r0", value="24"),
             Node(index=2, step=2, template="T0", labels=["add", "neg"],
                  operands=[Pointer(kind="node", value="24", node=1), text("2", "n3")], canonical="r1 - n3", value="22")]
    return Program(problem_id="p000000000001", source="teacher", question=Q, answer="22", dataset="gsm8k", nodes=nodes,
                   answer_node=2, heartbeats=3, read_spans=[(0, 46)], match_spans=[(0, 46)])


def _gold() -> dict:
    return {c: t.model_dump(mode="json") for c, t in targets(_program()).items()}


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_gold_target_scores_one_on_every_metric(component):
    g = _gold()[component]
    assert all(v == 1.0 for k, v in score(component, [g], [g]).items() if k != "heartbeat_mae")


def test_metrics_count_what_is_wrong():
    g = _gold()
    assert score("C1", [{"spans": [(0, 23)], "match_spans": []}], [g["C1"]])["char_f1"] == round(2 * 23 / (23 + 46), 4)
    c2 = score("C2", [{"templates": {"T0": 1, "T9": 1}, "heartbeats": 1}], [g["C2"]])
    assert c2 == {"template_micro_f1": 0.5, "heartbeat_mae": 2.0}
    wrong_first = {**g["C3"], "nodes": [{**g["C3"]["nodes"][0], "operands": ["const:2", "const:2"]}, *g["C3"]["nodes"][1:]]}
    assert score("C3", [wrong_first], [g["C3"]])["operand_exact_match"] == round(2 / 3, 4)
    assert score("C3", [{"nodes": g["C3"]["nodes"][:1], "quantities": {}}], [g["C3"]]) == {
        "operand_exact_match": round(1 / 3, 4), "node_count_accuracy": 0.0}
    assert score("C5", [{"edges": [], "order": []}], [g["C5"]])["edge_f1"] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1"):
        score("C6", [g["C6"], g["C6"]], [g["C6"]])


def test_baselines_read_the_text_and_the_train_majorities_only():
    g = _gold()
    b = Baselines({"C2": [{"templates": {"T5": 2}, "heartbeats": 4}] * 3 + [g["C2"]], "C6": [{"format": "decimal"}] * 2})
    example = {"question": Q}
    c1 = b.predict("C1", example, g["C1"])["clauses with a number"]
    assert [Q[s:e] for s, e in c1["spans"]] == ["Ann has 12 apples", "and buys 3 bags of 4 apples.", "She eats 2 apples."]
    assert b.predict("C2", example, g["C2"])["majority template set, median heartbeats"] == {"templates": {"T5": 1}, "heartbeats": 4}
    chain = b.predict("C3", example, g["C3"])["chain the numbers in order"]["nodes"]
    assert [n["operands"] for n in chain] == [[f"text:8-10", "text:27-28"], ["node:0", "text:37-38"], ["node:1", "text:56-57"]]
    c4 = next(iter(b.predict("C4", example, g["C4"]).values()))
    assert {m["role"] for m in c4["mentions"]} == {"operand"} and score("C4", [c4], [g["C4"]])["clause_accuracy"] == 1.0
    assert b.predict("C5", example, g["C5"])["chain nodes in order"]["edges"] == [(0, 1), (1, 2)]
    c6 = b.predict("C6", example, g["C6"])["majority format"]
    assert c6 == {"format": "decimal", "answer_node": None} and "answer_node_accuracy" not in score("C6", [c6], [g["C6"]])
