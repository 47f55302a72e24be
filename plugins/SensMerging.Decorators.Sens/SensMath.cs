namespace SensMerging.Decorators.Sens;

/// <summary>How the cross-task score g_ij becomes the transferability t_i.</summary>
public enum TransferReading
{
    /// <summary>Closer is better: t_i = sum_{j != i} exp(-g_ij / g_mean), g_mean the mean off-diagonal g.</summary>
    Alignment,

    /// <summary>As in the public re-implementation: t_i = sum_{j != i} g_ij (larger distance, larger weight).</summary>
    Distance,
}

/// <summary>What the temperature divides before the softmax over experts.</summary>
public enum TemperatureScale
{
    /// <summary>As published: sigma_i^l = softmax_i(alpha_i^l tau_i / T).</summary>
    Absolute,

    /// <summary>
    /// The project's extension: sigma_i^l = softmax_i(alpha_i^l tau_i / (T s^l)), s^l the standard deviation of
    /// alpha_k^l tau_k over the experts k in layer group l. T then counts spreads: the same T steers alike whatever the
    /// number of groups and experts (alpha ~ 1/sqrt(groups), tau ~ 1/K). A group whose experts tie gets c = 1.
    /// </summary>
    Spread,
}

/// <summary>
/// One layer group's settings: the temperature and its scale, and whether the group scales by task (alpha) and across
/// tasks (tau). sens's parameters <c>temperature</c>, <c>temperature_scale</c>, <c>task_scaling</c> and <c>cross_scaling</c>
/// may differ between groups (contract 1.6, a gradient or filter list in the config).
/// </summary>
/// <param name="Temperature">T, above 0.</param>
/// <param name="Scale">What T divides.</param>
/// <param name="TaskScaling">False: alpha = 1 for every expert in the group.</param>
/// <param name="CrossScaling">False: tau = 1/K for every expert in the group.</param>
public sealed record GroupSettings(double Temperature, TemperatureScale Scale = TemperatureScale.Absolute, bool TaskScaling = true, bool CrossScaling = true);

/// <summary>Every number of one Sens-Merging computation. Rows of the matrices are experts; columns layer groups.</summary>
/// <param name="Alpha">alpha_i^l.</param>
/// <param name="Transferability">t_i.</param>
/// <param name="Tau">tau_i.</param>
/// <param name="Sigma">sigma_i^l.</param>
/// <param name="Coefficients">c_i^l = K sigma_i^l.</param>
public sealed record SensCoefficients(double[][] Alpha, double[] Transferability, double[] Tau, double[][] Sigma, double[][] Coefficients);

/// <summary>
/// The formulas of Sens-Merging (docs/sens-merging.md), pure and side-effect free: score tables in, coefficients out.
/// Matrices are <c>[expert][column]</c>.
/// </summary>
public static class SensMath
{
    /// <summary>alpha_i^l = S_i^l / ||S_i||_2 (L2 over the groups of expert i). A row whose norm is 0 gives alpha 0.</summary>
    public static double[][] Alpha(IReadOnlyList<double[]> taskScores)
    {
        ArgumentNullException.ThrowIfNull(taskScores);
        var alpha = new double[taskScores.Count][];
        for (var i = 0; i < taskScores.Count; i++)
        {
            var row = taskScores[i];
            RequireFinite(row, "task score", i);
            double squares = 0;
            foreach (var s in row)
            {
                squares += s * s;
            }
            var norm = Math.Sqrt(squares);
            alpha[i] = new double[row.Length];
            if (norm > 0)
            {
                for (var l = 0; l < row.Length; l++)
                {
                    alpha[i][l] = row[l] / norm;
                }
            }
        }
        return alpha;
    }

    /// <summary>The mean of the off-diagonal entries of g (0 for fewer than two experts).</summary>
    public static double OffDiagonalMean(IReadOnlyList<double[]> cross)
    {
        ArgumentNullException.ThrowIfNull(cross);
        double sum = 0;
        var count = 0;
        for (var i = 0; i < cross.Count; i++)
        {
            for (var j = 0; j < cross.Count; j++)
            {
                if (i != j)
                {
                    sum += cross[i][j];
                    count++;
                }
            }
        }
        return count == 0 ? 0 : sum / count;
    }

    /// <summary>
    /// t_i from the K x K cross table g (diagonal ignored). Alignment: sum_{j != i} exp(-g_ij / g_mean); when g_mean is 0
    /// (every expert's logits equal every other's) every ratio is taken as 0, so t_i = K - 1. Distance: sum_{j != i} g_ij.
    /// </summary>
    public static double[] Transferability(IReadOnlyList<double[]> cross, TransferReading reading)
    {
        ArgumentNullException.ThrowIfNull(cross);
        var k = cross.Count;
        for (var i = 0; i < k; i++)
        {
            if (cross[i].Length != k)
            {
                throw new ArgumentException($"the cross-task table must be {k} x {k}; row {i} has {cross[i].Length} entries", nameof(cross));
            }
            for (var j = 0; j < k; j++)
            {
                if (i != j && (!double.IsFinite(cross[i][j]) || cross[i][j] < 0))
                {
                    throw new ArgumentException($"cross-task score g[{i}][{j}] = {cross[i][j]} is not a finite non-negative distance", nameof(cross));
                }
            }
        }
        var mean = OffDiagonalMean(cross);
        var t = new double[k];
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                if (i == j)
                {
                    continue;
                }
                t[i] += reading switch
                {
                    TransferReading.Alignment => mean > 0 ? Math.Exp(-cross[i][j] / mean) : 1.0,
                    TransferReading.Distance => cross[i][j],
                    _ => throw new ArgumentOutOfRangeException(nameof(reading), reading, "unknown transferability reading"),
                };
            }
        }
        return t;
    }

    /// <summary>tau_i = t_i / sum_k t_k; uniform 1/K when every t_i is 0.</summary>
    public static double[] Tau(IReadOnlyList<double> transferability)
    {
        ArgumentNullException.ThrowIfNull(transferability);
        var k = transferability.Count;
        double sum = 0;
        foreach (var t in transferability)
        {
            if (!double.IsFinite(t) || t < 0)
            {
                throw new ArgumentException($"transferability {t} is not a finite non-negative number", nameof(transferability));
            }
            sum += t;
        }
        var tau = new double[k];
        for (var i = 0; i < k; i++)
        {
            tau[i] = sum > 0 ? transferability[i] / sum : 1.0 / k;
        }
        return tau;
    }

    /// <summary>alpha with task scaling off: 1 for every expert and group.</summary>
    public static double[][] UniformAlpha(int experts, int groups) =>
        Enumerable.Range(0, experts).Select(_ => Enumerable.Repeat(1.0, groups).ToArray()).ToArray();

    /// <summary>tau with cross scaling off: 1/K for every expert.</summary>
    public static double[] UniformTau(int experts) => Enumerable.Repeat(1.0 / experts, experts).ToArray();

    /// <summary>
    /// sigma_i^l = softmax over experts of alpha_i^l tau_i / T (divided further by the group's spread with
    /// <see cref="TemperatureScale.Spread"/>), and c_i^l = K sigma_i^l. Computed as c = K e_i / sum_k e_k with
    /// e_i = exp(x_i - max_k x_k), so equal x give c = 1 exactly.
    /// </summary>
    public static (double[][] Sigma, double[][] Coefficients) Combine(
        IReadOnlyList<double[]> alpha, IReadOnlyList<double> tau, double temperature, TemperatureScale scale = TemperatureScale.Absolute)
    {
        ArgumentNullException.ThrowIfNull(alpha);
        var groups = alpha.Count == 0 ? 0 : alpha[0].Length;
        return Combine(alpha, tau, Enumerable.Repeat(new GroupSettings(temperature, scale), groups).ToArray());
    }

    /// <summary>
    /// <see cref="Combine(IReadOnlyList{double[]}, IReadOnlyList{double}, double, TemperatureScale)"/> with each layer
    /// group's own settings: its temperature and scale, and alpha_i^l = 1 where its task scaling is off, tau_i = 1/K where
    /// its cross scaling is off.
    /// </summary>
    public static (double[][] Sigma, double[][] Coefficients) Combine(
        IReadOnlyList<double[]> alpha, IReadOnlyList<double> tau, IReadOnlyList<GroupSettings> groupSettings)
    {
        ArgumentNullException.ThrowIfNull(alpha);
        ArgumentNullException.ThrowIfNull(tau);
        ArgumentNullException.ThrowIfNull(groupSettings);
        foreach (var settings in groupSettings)
        {
            if (!(settings.Temperature > 0) || !double.IsFinite(settings.Temperature))
            {
                throw new ArgumentOutOfRangeException(nameof(groupSettings), settings.Temperature, "the temperature must be a finite number above 0");
            }
        }
        var k = alpha.Count;
        if (tau.Count != k)
        {
            throw new ArgumentException($"alpha has {k} experts, tau {tau.Count}", nameof(tau));
        }
        if (k == 0)
        {
            return ([], []);
        }
        var groups = alpha[0].Length;
        if (groupSettings.Count != groups)
        {
            throw new ArgumentException($"{groupSettings.Count} group settings for {groups} layer groups", nameof(groupSettings));
        }
        for (var i = 0; i < k; i++)
        {
            if (alpha[i].Length != groups)
            {
                throw new ArgumentException($"alpha row {i} has {alpha[i].Length} groups, row 0 has {groups}", nameof(alpha));
            }
            RequireFinite(alpha[i], "alpha", i);
        }
        var sigma = new double[k][];
        var c = new double[k][];
        for (var i = 0; i < k; i++)
        {
            sigma[i] = new double[groups];
            c[i] = new double[groups];
        }
        var x = new double[k];
        var e = new double[k];
        for (var l = 0; l < groups; l++)
        {
            var settings = groupSettings[l];
            for (var i = 0; i < k; i++)
            {
                x[i] = (settings.TaskScaling ? alpha[i][l] : 1.0) * (settings.CrossScaling ? tau[i] : 1.0 / k);
            }
            var divisor = settings.Temperature;
            if (settings.Scale == TemperatureScale.Spread)
            {
                var spread = PopulationSpread(x);
                // Experts that tie in this group (spread 0, or below rounding) get equal coefficients.
                divisor = spread > 1e-12 * x.Max(Math.Abs) ? settings.Temperature * spread : double.PositiveInfinity;
            }
            var max = double.NegativeInfinity;
            for (var i = 0; i < k; i++)
            {
                x[i] = double.IsPositiveInfinity(divisor) ? 0 : x[i] / divisor;
                max = Math.Max(max, x[i]);
            }
            double sum = 0;
            for (var i = 0; i < k; i++)
            {
                e[i] = Math.Exp(x[i] - max);
                sum += e[i];
            }
            for (var i = 0; i < k; i++)
            {
                sigma[i][l] = e[i] / sum;
                c[i][l] = k * e[i] / sum;
            }
        }
        return (sigma, c);
    }

    /// <summary>The population standard deviation of <paramref name="values"/>.</summary>
    public static double PopulationSpread(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0)
        {
            return 0;
        }
        var mean = values.Average();
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / values.Count);
    }

    /// <summary>
    /// The whole computation. <paramref name="taskScores"/> null: task scaling off (alpha = 1);
    /// <paramref name="cross"/> null: cross scaling off (t_i = 1, tau = 1/K). Both off give c = 1 exactly.
    /// </summary>
    public static SensCoefficients Compute(
        IReadOnlyList<double[]>? taskScores,
        IReadOnlyList<double[]>? cross,
        int experts,
        int groups,
        TransferReading reading,
        double temperature,
        TemperatureScale scale = TemperatureScale.Absolute)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(groups);
        var settings = new GroupSettings(temperature, scale, TaskScaling: taskScores is not null, CrossScaling: cross is not null);
        return Compute(taskScores, cross, experts, Enumerable.Repeat(settings, groups).ToArray(), reading);
    }

    /// <summary>
    /// The whole computation with each layer group's own settings (<see cref="GroupSettings"/>). <paramref name="taskScores"/>
    /// is needed when some group scales by task, <paramref name="cross"/> when some group scales across tasks. The returned
    /// alpha is the one used (1 in the groups without task scaling); t and tau are the experts' (1 and 1/K without a cross
    /// table), and a group without cross scaling uses 1/K.
    /// </summary>
    public static SensCoefficients Compute(
        IReadOnlyList<double[]>? taskScores, IReadOnlyList<double[]>? cross, int experts, IReadOnlyList<GroupSettings> groupSettings, TransferReading reading)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        ArgumentNullException.ThrowIfNull(groupSettings);
        if (taskScores is not null && taskScores.Count != experts)
        {
            throw new ArgumentException($"the task-score table has {taskScores.Count} rows for {experts} experts", nameof(taskScores));
        }
        if (cross is not null && cross.Count != experts)
        {
            throw new ArgumentException($"the cross-task table has {cross.Count} rows for {experts} experts", nameof(cross));
        }
        if (taskScores is null && groupSettings.Any(g => g.TaskScaling))
        {
            throw new ArgumentException("a layer group scales by task, but there is no task-score table", nameof(taskScores));
        }
        if (cross is null && groupSettings.Any(g => g.CrossScaling))
        {
            throw new ArgumentException("a layer group scales across tasks, but there is no cross-task table", nameof(cross));
        }
        var groups = groupSettings.Count;
        var alpha = taskScores is null ? UniformAlpha(experts, groups) : Alpha(taskScores);
        for (var l = 0; l < groups; l++)
        {
            if (!groupSettings[l].TaskScaling)
            {
                foreach (var row in alpha)
                {
                    row[l] = 1.0;
                }
            }
        }
        var t = cross is null ? Enumerable.Repeat(1.0, experts).ToArray() : Transferability(cross, reading);
        var tau = cross is null ? UniformTau(experts) : Tau(t);
        var (sigma, c) = Combine(alpha, tau, groupSettings);
        return new SensCoefficients(alpha, t, tau, sigma, c);
    }

    private static void RequireFinite(double[] row, string what, int index)
    {
        for (var l = 0; l < row.Length; l++)
        {
            if (!double.IsFinite(row[l]))
            {
                throw new ArgumentException($"{what} [{index}][{l}] = {row[l]} is not finite");
            }
        }
    }
}
