"""corrections.csv from a Label Studio JSON export: a file, or pulled from a running server.

For each task exported by `labelstudio export` (labelstudio.py), the annotator's final choices are
compared with the tags the model predicted (data.predicted): a predicted tag kept is `confirm`, one
dropped is `reject`, a new one is `add`; reviewer is the annotator's e-mail (or Label Studio user
id), time the annotation's updated_at in UTC.

Rules for bad input (each problem is one sentence; the valid rows are written):
  - a file that is not complete JSON, or not Label Studio's JSON export: refused, nothing written;
  - a task not made by `labelstudio export`, or (with --tasks) not in that tasks file or of another
    model, or whose image is gone: that task is left out;
  - a chosen tag not in the task's labels: that tag is left out, the task's other tags are kept;
  - several annotations of one image (several annotators, or the image imported twice): a
    ground-truth annotation wins, else the one updated last; a disagreement is reported;
  - cancelled (skipped) annotations and drafts are ignored.
"""

import collections
import datetime
import json
import os
import re

from tagestimate import corrections, storage
from tagestimate.files import plural, printable_path
from tagestimate.review.labelstudio import FROM_NAME, MAX_JSON_BYTES, LabelStudioError, read_json

MAX_EXPORT_BYTES = MAX_JSON_BYTES  # a pulled export over this is refused, as a file is
TIMEOUT = 120.0  # seconds for the server to start answering; the whole export gets twice that

Outcome = collections.namedtuple("Outcome", "rows left_out notes annotated unannotated")


def load_export(path):
    """The tasks of a Label Studio JSON export file; LabelStudioError when it is not one."""
    return check_export(read_json(path, "Label Studio export"), printable_path(path))


def check_export(tasks, source):
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise LabelStudioError(f"{source} is not a Label Studio JSON export (a list of tasks); export the project "
                               "as JSON (nothing was written)")
    if tasks and not any("annotations" in task for task in tasks):
        raise LabelStudioError(f"{source} has no task with annotations: it looks like a JSON-MIN or CSV export; "
                               "export the project as JSON (nothing was written)")
    return tasks


def pull_export(url, token, project, timeout=TIMEOUT):
    """The tasks of project `project` on the Label Studio server at `url` (its export API, as JSON)."""
    from tagestimate.httpclient import FetchError, HttpClient

    client = HttpClient(timeout=timeout, retries=2, user_agent="tagestimate-labelstudio")
    try:
        client.session.headers["Authorization"] = _authorization(url, token, timeout)
        try:
            body = client.get(f"{url}/api/projects/{project}/export", params={"exportType": "JSON"},
                              max_bytes=MAX_EXPORT_BYTES, accept="application/json")
        except FetchError as error:
            hint = ("check --token (an access token from Label Studio's Account & Settings page)"
                    if re.search(r"HTTP 40[13]\b", str(error)) else
                    "check --project" if "HTTP 404" in str(error) else "check --url and that the server is up")
            raise LabelStudioError(f"cannot export project {project} from {url} ({error}); {hint}") from None
        emails = _emails(client, url)
    finally:
        client.close()
    try:
        tasks = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise LabelStudioError(f"the export of project {project} from {url} is not complete JSON ({error}); "
                               "try again (nothing was written)") from None
    tasks = check_export(tasks, f"the export of project {project} from {url}")
    for task in tasks:  # the export names annotators by user id: the server's user list gives their e-mail
        for annotation in task.get("annotations") or []:
            who = annotation.get("completed_by") if isinstance(annotation, dict) else None
            if isinstance(who, int) and who in emails:
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    return tasks


def _emails(client, url):
    """{user id: e-mail} of the server's users; {} when the token may not list them."""
    from tagestimate.httpclient import FetchError

    try:
        users = json.loads(client.get(f"{url}/api/users", max_bytes=64 << 20, accept="application/json"))
    except (FetchError, ValueError, UnicodeDecodeError):
        return {}
    users = users.get("results", []) if isinstance(users, dict) else users
    return {user["id"]: str(user["email"]) for user in users if isinstance(user, dict)
            and isinstance(user.get("id"), int) and isinstance(user.get("email"), str) and user["email"]}


def _authorization(url, token, timeout):
    """The Authorization header: a personal access token (a JWT) is exchanged for an access token;
    anything else is sent as a legacy token."""
    if token.count(".") != 2:
        return f"Token {token}"
    import requests

    try:
        answer = requests.post(f"{url}/api/token/refresh", json={"refresh": token}, timeout=timeout)
        access = answer.json().get("access") if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        access = None
    if not isinstance(access, str) or not access:
        raise LabelStudioError(f"{url} did not accept --token as a personal access token; copy it again from "
                               "Label Studio's Account & Settings page (nothing was written)")
    return f"Bearer {access}"


# ---------------------------------------------------------------- annotations -> corrections

def reference_tasks(path):
    """{(item, key): data} of a tasks file written by `labelstudio export`."""
    tasks = read_json(path, "tasks file")
    if not isinstance(tasks, list):
        raise LabelStudioError(f"tasks file {printable_path(path)} is not a list of tasks; pass the file that "
                               "`labelstudio export --out` wrote")
    found = {}
    for task in tasks:
        data = task.get("data") if isinstance(task, dict) else None
        if _problem_of(data) is None:
            found[(data["item"], data["key"])] = data
    return found


def _problem_of(data):
    """Why `data` is not a task of `labelstudio export`, or None."""
    if not isinstance(data, dict):
        return "has no data"
    for name in ("item", "key", "path", "model_version"):
        if not isinstance(data.get(name), str):
            return f"has no data.{name}"
    for name in ("predicted", "labels"):
        if not isinstance(data.get(name), list) or not all(isinstance(tag, str) for tag in data[name]):
            return f"has no data.{name} list"
    return None


def convert(tasks, reference=None, tasks_file="the tasks file"):
    """An Outcome: corrections rows (image order as in the export), and what was left out and why."""
    left_out, notes = [], []
    chosen = {}  # image path -> (task id, its data, the annotation that decides)
    annotated = unannotated = 0
    for task in tasks:
        found = _task_data(task, reference, tasks_file, left_out)
        if found is None:
            continue
        name, data = found
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            unannotated += 1
            continue
        annotated += 1
        winner = _winner(name, annotations, data["labels"], left_out, notes)
        previous = chosen.get(data["path"])
        if previous is not None:  # the image imported twice: the same rule across its tasks
            if _choices(previous[2], previous[1]["labels"])[0] != _choices(winner, data["labels"])[0]:
                notes.append(f"{name} and task {previous[0]} show the same image with different choices; "
                             "the ground-truth or last updated annotation was used")
            if _rank(previous[2]) > _rank(winner):
                continue
        chosen[data["path"]] = (task.get("id", "?"), data, winner)
    rows = [row for _, data, annotation in chosen.values() for row in _rows(data, annotation)]
    return Outcome(rows, left_out, notes, annotated, unannotated)


def _task_data(task, reference, tasks_file, left_out):
    """(the task's name for messages, its data: from the tasks file when given), or None when it is left out."""
    name = f"task {task.get('id', '?')}"
    data = task.get("data")
    problem = _problem_of(data)
    if problem:
        left_out.append(f"{name} {problem}: it was not exported by `tagestimate labelstudio export`; left out")
        return None
    name += f" (item {data['item']!r}, image {data['key']!r})" if data["item"] else f" (image {data['key']!r})"
    if reference is not None:
        known = reference.get((data["item"], data["key"]))
        if known is None:
            left_out.append(f"{name} is not in {tasks_file}: it comes from another output or run; left out")
            return None
        if known["model_version"] != data["model_version"]:
            left_out.append(f"{name} was exported for model {data['model_version']}, {tasks_file} for model "
                            f"{known['model_version']}: another model's tags; left out")
            return None
        data = known
    if storage.on_disk(data["path"]) and not os.path.isfile(data["path"]):
        left_out.append(f"{name}: its image {printable_path(data['path'])} is gone; left out")
        return None
    return name, data


def _winner(name, annotations, labels, left_out, notes):
    """The annotation that decides (ground truth, else the last updated); says what it cannot use."""
    ranked = sorted(annotations, key=_rank)
    winner = ranked[-1]
    unknown = _choices(winner, labels)[1]
    if unknown:
        one = len(unknown) == 1
        left_out.append(f"{name}: {plural(len(unknown), 'tag')} {', '.join(map(repr, unknown))} "
                        f"{'is' if one else 'are'} not among the model's labels; "
                        f"{'that tag was' if one else 'they were'} left out, the task's other tags kept")
    if len({tuple(_choices(annotation, labels)[0]) for annotation in ranked}) > 1:
        notes.append(f"{name} has {len(ranked)} annotations that disagree; the "
                     f"{'ground-truth' if winner.get('ground_truth') else 'last updated'} one, by "
                     f"{_reviewer(winner) or 'an unknown annotator'}, was used")
    return winner


def _rank(annotation):
    """Ground truth first, then the last updated (created) one."""
    return bool(annotation.get("ground_truth")), _when(annotation) or ""


def _choices(annotation, labels):
    """(the annotation's chosen tags that are labels, in label order; the chosen tags that are not)."""
    chosen = []
    for result in annotation.get("result") or []:
        if isinstance(result, dict) and result.get("type") == "choices" and result.get("from_name", FROM_NAME) == \
                FROM_NAME:
            values = (result.get("value") or {}).get("choices") or []
            chosen += [str(value) for value in values if isinstance(value, (str, int, float))]
    known = [label for label in labels if label in chosen]
    return known, sorted({tag for tag in chosen if tag not in labels})


def _rows(data, annotation):
    chosen = set(_choices(annotation, data["labels"])[0])
    reviewer, time = _reviewer(annotation), _when(annotation) or ""
    rows = [corrections.Correction(data["path"], data["item"], tag, "confirm" if tag in chosen else "reject",
                                   reviewer, time) for tag in data["predicted"]]
    rows += [corrections.Correction(data["path"], data["item"], tag, "add", reviewer, time)
             for tag in data["labels"] if tag in chosen and tag not in data["predicted"]]
    return rows


def _reviewer(annotation):
    """The annotator's e-mail when the export names it, else `user N` (Label Studio's user id)."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or f"user {who.get('id', '?')}")
    named = annotation.get("created_username")  # "email, id" in Label Studio's JSON export
    if isinstance(named, str) and named.strip():
        return named.rsplit(",", 1)[0].strip() if "," in named else named.strip()
    return f"user {who}" if who is not None else ""


def _when(annotation):
    """updated_at (or created_at) as UTC ISO 8601 to the second; None when absent or unreadable."""
    for field in ("updated_at", "created_at"):
        value = annotation.get(field)
        if isinstance(value, str):
            try:
                moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)
            return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def import_export(tasks, out, reference=None, tasks_file="the tasks file"):
    """Write corrections for `tasks` to `out` (atomically); returns the Outcome."""
    outcome = convert(tasks, reference, tasks_file)
    corrections.write(out, outcome.rows)
    return outcome
