# Sourced by the scripts in this folder: the project root, a check that every model-zoo file a script needs
# exists (all are reported by name before anything runs), and the main_hinge.py call on the chosen GPU.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

require_files() {
  local missing=0 file
  for file in "$@"; do
    if [ ! -f "$file" ]; then
      echo "missing model-zoo file: $file" >&2
      missing=$((missing + 1))
    fi
  done
  if [ "$missing" -gt 0 ]; then
    echo "$missing file(s) missing: put them there (see model_zoo/README.md) or set MODEL_PATH; nothing was run." >&2
    exit 1
  fi
}

main_hinge() {
  CUDA_VISIBLE_DEVICES=$GPU python "$ROOT/main_hinge.py" "$@" --dir_save "$SAVE_PATH" --dir_data "$DATA_PATH"
}
