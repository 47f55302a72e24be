using System.Globalization;
using SensMerging.Abstractions;

namespace SensMerging.Registry;

/// <summary>Draws a merge's coefficients (one line per expert over the layer groups) as a PNG with ScottPlot.</summary>
public static class CoefficientPlot
{
    /// <summary>
    /// Writes <paramref name="pngPath"/>: x = layer groups in model order, y = coefficient, one line per expert, the
    /// uniform weight 1 as a dashed reference; title with the merge id and method. Creates the folder when missing.
    /// Throws when the record has no coefficients.
    /// </summary>
    public static void Write(MergeRecord record, string pngPath, int width = 1000, int height = 560)
    {
        ArgumentNullException.ThrowIfNull(record);
        ArgumentException.ThrowIfNullOrWhiteSpace(pngPath);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 200);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 150);
        var c = record.Coefficients;
        if (c is null || c.Experts.Count == 0 || c.LayerGroups.Count == 0)
        {
            throw new InvalidOperationException($"merge '{record.Id}' has no coefficients to plot (it ran {MergeSummary.MethodName(record)} without a coefficient-producing decorator)");
        }
        c.Validate();

        var plot = new ScottPlot.Plot();
        var xs = Enumerable.Range(0, c.LayerGroups.Count).Select(i => (double)i).ToArray();
        var palette = new ScottPlot.Palettes.Category10();
        for (var e = 0; e < c.Experts.Count; e++)
        {
            var line = plot.Add.Scatter(xs, c.Values[e]);
            line.LegendText = c.Experts[e];
            line.Color = palette.GetColor(e);
            line.LineWidth = 2;
            line.MarkerSize = 5;
        }
        var reference = plot.Add.HorizontalLine(1.0);
        reference.LinePattern = ScottPlot.LinePattern.Dashed;
        reference.Color = ScottPlot.Colors.Gray;
        reference.LineWidth = 1;

        var labels = c.LayerGroups.Select(ShortLabel).ToArray();
        var step = Math.Max(1, (int)Math.Ceiling(labels.Length / 32.0));
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (var i = 0; i < labels.Length; i += step)
        {
            ticks.AddMajor(i, labels[i]);
        }
        plot.Axes.Bottom.TickGenerator = ticks;
        plot.Title($"{record.Id}  {MergeSummary.MethodName(record)}: coefficients per layer group");
        plot.XLabel("layer group");
        plot.YLabel("coefficient (mean over experts = 1)");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);

        var folder = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (!string.IsNullOrEmpty(folder))
        {
            Directory.CreateDirectory(folder);
        }
        plot.SavePng(pngPath, width, height);
    }

    /// <summary><c>model.layers.12</c> → <c>L12</c>, embeddings → <c>emb</c>, final norm → <c>norm</c>, <c>lm_head</c> → <c>head</c>.</summary>
    public static string ShortLabel(string group)
    {
        ArgumentNullException.ThrowIfNull(group);
        var block = LayerGroups.BlockIndex(group);
        return group switch
        {
            LayerGroups.Embeddings => "emb",
            LayerGroups.FinalNorm => "norm",
            LayerGroups.LmHead => "head",
            _ when block >= 0 => "L" + block.ToString(CultureInfo.InvariantCulture),
            _ => group,
        };
    }
}
