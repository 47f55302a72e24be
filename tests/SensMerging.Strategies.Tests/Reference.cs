namespace SensMerging.Strategies.Tests;

/// <summary>Independent plain-array implementations of the published definitions, computed in double.</summary>
internal static class Reference
{
    public static double[] Delta(float[] model, float[] baseValues) =>
        [.. model.Select((x, i) => (double)x - baseValues[i])];

    /// <summary>TIES trim: keep the floor(density * n) entries of largest magnitude (magnitudes assumed distinct).</summary>
    public static double[] TopMagnitude(double[] delta, double density)
    {
        if (density >= 1)
        {
            return delta;
        }
        var k = (int)Math.Floor(density * delta.Length);
        var keep = Enumerable.Range(0, delta.Length).OrderByDescending(i => Math.Abs(delta[i])).Take(k).ToHashSet();
        return [.. delta.Select((d, i) => keep.Contains(i) ? d : 0.0)];
    }

    /// <summary>
    /// Breadcrumbs as mergekit writes it: ascending magnitude ranks <c>sorted[bottom:-top]</c> survive, with Python's
    /// slice meaning, so a top of 0 (gamma * n below 1) keeps nothing.
    /// </summary>
    public static double[] Band(double[] delta, double density, double gamma)
    {
        if (density >= 1)
        {
            return delta;
        }
        var n = delta.Length;
        var target = (int)Math.Floor(density * n);
        var top = (int)Math.Floor(gamma * n);
        var bottom = n - target - top;
        if (bottom < 0)
        {
            top += bottom;
            bottom = 0;
        }
        var order = Enumerable.Range(0, n).OrderBy(i => Math.Abs(delta[i])).ToArray();
        var end = top > 0 ? n - top : 0; // Python: xs[bottom:-0] == xs[bottom:0], empty
        var keep = order.Skip(bottom).Take(Math.Max(0, end - bottom)).ToHashSet();
        return [.. delta.Select((d, i) => keep.Contains(i) ? d : 0.0)];
    }

    /// <summary>base + lambda * mix(w_i * delta_i), mix = plain sum or TIES sign election (sum method).</summary>
    /// <summary>mergekit's L1 rescale of a sparsified delta: times sum|delta| / sum|sparse|, unless either is below 1e-7.</summary>
    public static double[] RescaleL1(double[] delta, double[] sparse)
    {
        var before = delta.Sum(Math.Abs);
        var after = sparse.Sum(Math.Abs);
        return before < 1e-7 || after < 1e-7 ? sparse : [.. sparse.Select(d => d * (before / after))];
    }

    public static double[] Combine(float[] baseValues, double[][] deltas, double[] weights, bool consensus, bool normalize, double lambda)
    {
        var n = baseValues.Length;
        var result = new double[n];
        for (var e = 0; e < n; e++)
        {
            double mixed = 0;
            double divisor = 0;
            if (!consensus)
            {
                for (var i = 0; i < deltas.Length; i++)
                {
                    mixed += weights[i] * deltas[i][e];
                    divisor += weights[i];
                }
                if (Math.Abs(divisor) < 1e-8)
                {
                    divisor = 1;
                }
            }
            else
            {
                double sum = 0;
                for (var i = 0; i < deltas.Length; i++)
                {
                    sum += weights[i] * deltas[i][e];
                }
                var elected = sum >= 0 ? 1 : -1;
                for (var i = 0; i < deltas.Length; i++)
                {
                    var contribution = weights[i] * deltas[i][e];
                    if (Math.Sign(contribution) == elected)
                    {
                        mixed += contribution;
                        divisor += weights[i];
                    }
                }
                if (divisor == 0)
                {
                    divisor = 1;
                }
            }
            if (normalize)
            {
                mixed /= divisor;
            }
            result[e] = baseValues[e] + lambda * mixed;
        }
        return result;
    }

    public static double[] Slerp(float[] v0, float[] v1, double t)
    {
        double dot = 0, n0 = 0, n1 = 0;
        for (var i = 0; i < v0.Length; i++)
        {
            dot += (double)v0[i] * v1[i];
            n0 += (double)v0[i] * v0[i];
            n1 += (double)v1[i] * v1[i];
        }
        n0 = Math.Sqrt(n0);
        n1 = Math.Sqrt(n1);
        var cos = dot / (n0 * n1);
        double s0, s1;
        if (Math.Abs(cos) > 0.9995)
        {
            (s0, s1) = (1 - t, t);
        }
        else
        {
            var theta = Math.Acos(cos);
            s0 = Math.Sin((1 - t) * theta) / Math.Sin(theta);
            s1 = Math.Sin(t * theta) / Math.Sin(theta);
        }
        return [.. v0.Select((a, i) => s0 * a + s1 * v1[i])];
    }

    public static double[] ModelStock(float[] baseValues, float[][] models, double[] weights)
    {
        var deltas = models.Select(m => Delta(m, baseValues)).ToArray();
        var k = models.Length;
        double cosSum = 0;
        var pairs = 0;
        for (var i = 0; i < k; i++)
        {
            for (var j = i + 1; j < k; j++)
            {
                double dot = 0, ni = 0, nj = 0;
                for (var e = 0; e < baseValues.Length; e++)
                {
                    dot += deltas[i][e] * deltas[j][e];
                    ni += deltas[i][e] * deltas[i][e];
                    nj += deltas[j][e] * deltas[j][e];
                }
                cosSum += Math.Clamp(dot / Math.Max(Math.Sqrt(ni) * Math.Sqrt(nj), 1e-6), -1, 1);
                pairs++;
            }
        }
        var cos = cosSum / pairs;
        var t = k * cos / (1 + (k - 1) * cos);
        var weightSum = weights.Sum();
        var result = new double[baseValues.Length];
        for (var e = 0; e < result.Length; e++)
        {
            double average = 0;
            for (var i = 0; i < k; i++)
            {
                average += weights[i] / weightSum * models[i][e];
            }
            result[e] = t * average + (1 - t) * baseValues[e];
        }
        return result;
    }
}
