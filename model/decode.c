/* placeholder: being written (decode) */
#include "decode.h"
