using SensMerging.Zoo;
using System.Globalization;
using System.Text;
using ScottPlot;

namespace SensMerging.Host.Demo;

/// <summary>The demo's results in the shape of the paper's main table (rows: methods; columns: tasks and average).</summary>
public static class DemoReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Exact-match accuracy in percent, mean over seeds, with the spread (sample standard deviation) when there are several.</summary>
    public static string Cell(DemoRow row, Func<ModelScores, double> metric) =>
        row.PerSeed.Count > 1
            ? string.Create(Inv, $"{100 * row.MeanOf(metric):F1} ± {100 * row.SpreadOf(metric):F1}")
            : string.Create(Inv, $"{100 * row.MeanOf(metric):F1}");

    public static IReadOnlyList<string> Header(IReadOnlyList<string> tasks) => ["method", .. tasks, "average"];

    public static IEnumerable<string[]> Body(IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows) =>
        rows.Select(r => (string[])[r.Label, .. tasks.Select(t => Cell(r, s => s.ExactMatch[t])), Cell(r, s => s.AverageExactMatch)]);

    public static IReadOnlyList<string> RetentionHeader(IReadOnlyList<string> tasks) => [.. tasks.Select(t => "retention " + t), "retention average"];

    /// <summary>The retention cells of each row (dashes for rows that are not merges), in the order of <see cref="RetentionHeader"/>.</summary>
    public static IEnumerable<string[]> RetentionBody(IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows)
    {
        var retention = new RetentionTable(tasks, rows);
        return rows.Select(r => (string[])[.. tasks.Select(t => RetentionCell(retention.Of(r, t))), RetentionCell(retention.AverageOf(r))]);
    }

    /// <summary>Retention in percent, mean over seeds (± spread with several), or a dash for rows that are not merges.</summary>
    public static string RetentionCell(IReadOnlyList<double>? perSeed)
    {
        if (perSeed is null)
        {
            return "—";
        }
        if (perSeed.Any(double.IsNaN))
        {
            return "n/a";
        }
        var mean = perSeed.Average();
        return perSeed.Count < 2
            ? string.Create(Inv, $"{100 * mean:F0}%")
            : string.Create(Inv, $"{100 * mean:F0} ± {100 * DemoRow.SampleSpread(perSeed):F0}%");
    }

    public static string Markdown(DemoOptions options, IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows)
    {
        ArgumentNullException.ThrowIfNull(options);
        var sb = new StringBuilder();
        sb.AppendLine("# sensmerge demo results").AppendLine();
        sb.AppendLine(Inv, $"Seeds {string.Join(", ", options.Seeds)}; zoo size {options.Zoo.Size}; {options.EvalSamples} evaluation and {options.CalibrationSamples} calibration samples per task; sens temperature {options.Temperature} ({options.TemperatureScale}), reading `{options.Alignment}`; density {options.Density} for ties and dare_ties; lambda {options.Lambda} for task_arithmetic.");
        sb.AppendLine().AppendLine("Exact-match accuracy (%) by greedy decoding on each task's " + SetName(options.Split) + (options.Seeds.Count > 1 ? ", mean ± standard deviation over seeds:" : ":")).AppendLine();
        IReadOnlyList<string> header = [.. Header(tasks), .. RetentionHeader(tasks)];
        sb.AppendLine("| " + string.Join(" | ", header) + " |");
        sb.AppendLine("|" + string.Concat(Enumerable.Repeat(" --- |", header.Count)));
        foreach (var (accuracy, retention) in Body(tasks, rows).Zip(RetentionBody(tasks, rows)))
        {
            sb.AppendLine("| " + string.Join(" | ", accuracy.Concat(retention)) + " |");
        }
        sb.AppendLine().AppendLine(
            "Retention on a task = (merged - base) / (expert - base), the task's own expert and the base of the same seed; "
            + "the average is over the tasks, then over seeds (n/a where an expert does not beat the base).");
        sb.AppendLine().AppendLine("Perplexity of the reference responses (lower is better):").AppendLine();
        sb.AppendLine("| method | " + string.Join(" | ", tasks) + " |");
        sb.AppendLine("|" + string.Concat(Enumerable.Repeat(" --- |", tasks.Count + 1)));
        foreach (var row in rows)
        {
            sb.AppendLine("| " + row.Label + " | " + string.Join(" | ", tasks.Select(t => row.MeanOf(s => s.Perplexity[t]).ToString("F2", Inv))) + " |");
        }
        sb.AppendLine().AppendLine("Registry records: " + string.Join(", ", rows.SelectMany(r => r.RecordIds).Select(id => $"`{id}`")));
        return sb.ToString();
    }

    /// <summary>A grouped bar chart: exact match per task and the average, one group per method row.</summary>
    public static void WriteTablePng(IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows, string path)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(rows);
        var plot = new Plot();
        var series = tasks.Select(t => (Label: t, Metric: (Func<ModelScores, double>)(s => s.ExactMatch[t])))
            .Append(("average", s => s.AverageExactMatch)).ToList();
        var palette = new ScottPlot.Palettes.Category10();
        var width = 1.0 / (series.Count + 1);
        for (var k = 0; k < series.Count; k++)
        {
            var bars = rows.Select((row, i) => new Bar
            {
                Position = i + (k - (series.Count - 1) / 2.0) * width,
                Value = 100 * row.MeanOf(series[k].Metric),
                Size = width * 0.9,
                FillColor = palette.GetColor(k),
            }).ToList();
            var added = plot.Add.Bars(bars);
            added.LegendText = series[k].Label;
        }
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, rows.Count).Select(i => (double)i)], [.. rows.Select(r => r.Label)]);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Margins(bottom: 0);
        plot.YLabel("exact match (%)");
        plot.Title("sensmerge demo: merged models by method");
        plot.ShowLegend(Edge.Right);
        plot.Layout.Fixed(new PixelPadding(60, 170, 160, 40));
        plot.SavePng(path, Math.Max(900, 70 * rows.Count + 200), 600);
    }

    /// <summary>How the report names the held-out set that was scored.</summary>
    public static string SetName(HeldOutSplit split) => split == HeldOutSplit.Dev ? "development set (for choosing settings)" : "held-out evaluation set";
}

/// <summary>
/// How much of each expert's gain over the base a merged row keeps on the expert's own task, per seed:
/// (merged - base) / (expert - base), with the base and the task's expert of the same seed.
/// </summary>
public sealed class RetentionTable
{
    private readonly IReadOnlyList<string> _tasks;
    private readonly DemoRow? _base;
    private readonly Dictionary<string, DemoRow> _experts;

    public RetentionTable(IReadOnlyList<string> tasks, IReadOnlyList<DemoRow> rows)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(rows);
        _tasks = tasks;
        _base = rows.FirstOrDefault(r => r.Label == "base");
        _experts = rows.Where(r => r.Label.StartsWith("expert:", StringComparison.Ordinal)).ToDictionary(r => r.Label["expert:".Length..], StringComparer.Ordinal);
    }

    /// <summary>Retention on <paramref name="task"/> per seed, or null when the row is not a merge (or the base or expert row is missing).</summary>
    public IReadOnlyList<double>? Of(DemoRow row, string task)
    {
        ArgumentNullException.ThrowIfNull(row);
        if (row.RecordIds.Count == 0 || _base is null || !_experts.TryGetValue(task, out var expert))
        {
            return null;
        }
        return row.PerSeed.Select((scores, seed) =>
        {
            var baseScore = _base.PerSeed[seed].ExactMatch[task];
            var gain = expert.PerSeed[seed].ExactMatch[task] - baseScore;
            return gain > 0 ? (scores.ExactMatch[task] - baseScore) / gain : double.NaN;
        }).ToList();
    }

    /// <summary>The mean retention over the tasks, per seed, or null when the row is not a merge.</summary>
    public IReadOnlyList<double>? AverageOf(DemoRow row)
    {
        var perTask = _tasks.Select(t => Of(row, t)).ToList();
        if (perTask.Any(p => p is null))
        {
            return null;
        }
        return Enumerable.Range(0, row.PerSeed.Count).Select(seed => perTask.Average(p => p![seed])).ToList();
    }
}
