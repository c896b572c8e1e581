/* placeholder: being written (oneDNN CPU backend) */
#include "../backend.h"
