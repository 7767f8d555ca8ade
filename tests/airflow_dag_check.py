"""Run inside the Airflow environment by tests/test_airflow.py (not a test module of the hub's own suite).

    python tests/airflow_dag_check.py DAG_FOLDER [DAG_ID]

Imports the DAG folder the way Airflow's DAG processor does and prints ``DAGS {json}`` (import errors,
every DAG's tasks and their upstream tasks, schedule). With a DAG_ID it runs that DAG once with
``dag.test()`` and prints ``STATE <state>``.
"""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag


def main() -> None:
    bag = DagBag(dag_folder=sys.argv[1])
    report = {
        "errors": {path: str(error) for path, error in bag.import_errors.items()},
        "dags": {dag_id: {"tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
                          "schedule": getattr(dag.timetable, "expression", None),
                          "timezone": str(getattr(dag.timetable, "timezone", "")),
                          "max_active_runs": dag.max_active_runs}
                 for dag_id, dag in bag.dags.items()},
    }
    print("DAGS " + json.dumps(report), flush=True)
    if len(sys.argv) > 2:
        run = bag.dags[sys.argv[2]].test()
        print(f"STATE {run.state}", flush=True)


if __name__ == "__main__":
    main()
