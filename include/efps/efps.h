/* efps: every public header. */
#ifndef EFPS_H
#define EFPS_H
#include "efps/core.h"
#include "efps/compress.h"
#include "efps/optim.h"
#endif
