/* placeholder: being written (network orchestration) */
#include "network.h"
