/* Softmax cross-entropy, computed in double from the max-shifted logits so
 * that large logits neither overflow nor lose the small probabilities. */
#include "layer.h"

#include <math.h>

double nn_softmax_ce(const float *logits, const int32_t *labels, int n, int classes, float *dlogits,
                     int *correct_p)
{
    double loss = 0.0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (z[k] > z[best])
                best = k;
        correct += best == labels[i];
        double sum = 0.0;
        for (int k = 0; k < classes; k++)
            sum += exp((double)z[k] - z[best]);
        double lse = z[best] + log(sum);
        loss += lse - z[labels[i]];
        if (dlogits == NULL)
            continue;
        float *d = dlogits + (size_t)i * classes;
        for (int k = 0; k < classes; k++) {
            double p = exp((double)z[k] - lse);
            d[k] = (float)((p - (k == labels[i])) / n);
        }
    }
    if (correct_p != NULL)
        *correct_p = correct;
    return loss / n;
}
