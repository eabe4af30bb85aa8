/* efps: every public header. */
#ifndef EFPS_H
#define EFPS_H
#include "efps/version.h"
#include "efps/core.h"
#include "efps/compress.h"
#include "efps/optim.h"
#include "efps/transport.h"
#include "efps/ps.h"
#endif
