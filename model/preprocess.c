/* placeholder: being written (preprocessing) */
#include "preprocess.h"
