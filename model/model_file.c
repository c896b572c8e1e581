/* placeholder: being written (safetensors I/O) */
#include "model_file.h"
