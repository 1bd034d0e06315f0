"""Names that runs, sensors and the run history share."""

#: Run tags that the run history shows: how a run was started and whether it refreshed everything.
MODE_TAG = "ci_pipeline/mode"
TRIGGER_TAG = "ci_pipeline/trigger"
#: Sensor names.
NEW_FILES_SENSOR = "new_files"
FAILURE_SENSOR = "failure_notification"
