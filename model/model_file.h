/* The model file: safetensors (https://huggingface.co/docs/safetensors):
 *   8 bytes   little-endian uint64 N, the header's size
 *   N bytes   JSON object: for each tensor "name": {"dtype": "F32", "shape": [...],
 *             "data_offsets": [begin, end]} (offsets relative to the data section),
 *             and "__metadata__": {string: string}
 *   the rest  raw little-endian tensor data
 *
 * Tensor names are PyTorch's state_dict() names of the reference model
 * (captcha_network_tensor()), plus "...num_batches_tracked" (I64 scalar) per
 * batch norm, which is accepted on load (and written on save, so PyTorch's
 * load_state_dict(strict=True) accepts the file). Other extra tensors are an error.
 *
 * Our __metadata__ keys (all values strings):
 *   "format"         "gst-captcha/1"
 *   "charset"        e.g. "0123456789abcdefghijklmnopqrstuvwxyz"
 *   "length"         e.g. "5"
 *   "input_height"   e.g. "32"
 *   "input_width"    e.g. "128"
 *   "channel_order"  "BGR" or "RGB"
 *   "mean", "std"    e.g. "0.5"
 * A file with none of these keys (plain PyTorch) gets the reference defaults
 * (captcha_config_reference) and the loader reports that in *notice.
 * Partial metadata: a file whose "format" is "gst-captcha/1" must carry every
 * key above (a missing one is an error; another "gst-captcha/..." format is an
 * error too). Without that format (a PyTorch file annotated by hand; a
 * "format" of another writer, e.g. Hugging Face's "pt", is ignored) the keys
 * present are used, the missing ones take the reference values, and *notice
 * names the keys assumed. Either way fc_layers.0.weight must have the shape
 * the resulting config implies, [length * charset size, 256 * H/32 * W/32],
 * or loading (and captcha_model_read_config) fails naming both shapes.
 * Metadata values are strings; integers are plain decimal digits ("5x", " 5"
 * and "+5" are errors), mean/std decimal numbers (sign, digits, '.', exponent;
 * no hex, inf or nan; magnitude 0 or 1e-30..1e30) within the config's ranges
 * (captcha_config_validate). Other metadata keys are ignored on load.
 *
 * The data section must be covered by the tensors exactly, without gaps or
 * trailing bytes (as the safetensors reference reader requires), and it must be
 * at least as large as the config's tensors (captcha_network_tensor_floats)
 * before any network memory is allocated, so a small file cannot make the
 * loader allocate for a large geometry its data does not hold.
 */
#ifndef CAPTCHA_MODEL_FILE_H
#define CAPTCHA_MODEL_FILE_H

#include <stdio.h>

#include "captcha_config.h"
#include "captcha_status.h"
#include "network.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads only the configuration of a model file (header and metadata),
 * checking the header's framing and the metadata's values. notice (may be
 * NULL, notice_size bytes) receives a one-line remark when defaults were
 * assumed, else "". Errors name the file and the field. */
captcha_status captcha_model_read_config(const char *path, captcha_config *config, char *notice,
                                         size_t notice_size, captcha_error *err);

/* Loads a model file into a new network on backend: reads the config, creates
 * the network, validates every tensor (present, dtype F32 (I64 for
 * num_batches_tracked), shape as the config implies, offsets inside the data
 * section and not overlapping, header size inside the file, every value
 * finite, running variances >= 0) and copies the data. backend is not owned: it
 * must outlive the network (as in captcha_network_create). notice (may be NULL,
 * notice_size bytes) receives a one-line remark when defaults were assumed (a
 * plain PyTorch state_dict without our metadata), else "". path must name a
 * regular file (a FIFO, device or folder is refused without being read); one
 * written over in place while it loads is refused (its size or mtime changed),
 * one replaced by a rename loads as it was opened. On any failure *out is NULL,
 * nothing leaks, and the message names the file and the tensor or field with
 * expected versus found. */
captcha_status captcha_model_load(const char *path, captcha_backend *backend,
                                  captcha_network **out, char *notice, size_t notice_size,
                                  captcha_error *err);

/* Checks network's parameters and running statistics hold what
 * captcha_model_load accepts: every value finite, running variances >= 0. A
 * failure (CAPTCHA_ERROR_FORMAT) names the first offending tensor, element and
 * value: "tensor cnn_layers.0.block.0.weight: element 54 is nan (expected a
 * finite number)", e.g. after a training run diverged. */
captcha_status captcha_model_check_values(captcha_network *network, captcha_error *err);

/* Writes network's parameters and running statistics (and num_batches_tracked)
 * with our metadata. Writes path + ".tmp" and renames it over path, so an
 * existing file is replaced only by a complete one. A network that fails
 * captcha_model_check_values is not written (CAPTCHA_ERROR_FORMAT, "PATH: not
 * written: tensor ..."): the file could not be loaded back. extra_metadata: NULL or
 * a NULL-terminated list of key, value, key, value, ... added to __metadata__. */
captcha_status captcha_model_save(captcha_network *network, const char *path,
                                  const char *const *extra_metadata, captcha_error *err);

/* Opens tmp_path ("PATH.tmp", the file a complete copy of PATH is written to before it
 * is renamed over PATH) for writing as a new file: whatever a crashed run left there,
 * a file or a symbolic link, is removed first (a link itself, never what it points
 * to, so a link planted there cannot redirect the write), then the file is created
 * exclusively (O_EXCL | O_NOFOLLOW), mode 0666 less the umask. Returns NULL with
 * CAPTCHA_ERROR_IO ("PATH: cannot create PATH.tmp: <reason>") when it cannot, e.g. a
 * directory is there. Used by captcha_model_save and captcha-train's checkpoint. */
FILE *captcha_file_create_temporary(const char *tmp_path, const char *path, captcha_error *err);

#ifdef __cplusplus
}
#endif

#endif
