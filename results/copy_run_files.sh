# Sourced by the results/*/collect.sh scripts.
# copy_run_files RUN DEST: a finished run's small files (config, metrics.csv, pseudo-label diagnostics, final
# metrics, per-image test and val predictions; whichever exist) into DEST; never checkpoints, encoders or event files.
copy_run_files() {
  mkdir -p "$2"
  for f in config.yaml metrics.csv pseudo_labels.csv final_metrics.json test_predictions_final.csv test_predictions_best.csv \
           val_predictions_final.csv val_predictions_best.csv; do
    if [ -f "$1/$f" ]; then cp "$1/$f" "$2/"; fi
  done
}
