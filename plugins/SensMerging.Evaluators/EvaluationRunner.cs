using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Evaluators;

/// <summary>Loads each model of an <see cref="EvaluationGrid"/> once and fills its cells.</summary>
internal static partial class EvaluationRunner
{
    /// <summary>What one cell produced: the metric and figures summed into the table's details.</summary>
    public readonly record struct CellResult(double Value, int Samples, long Tokens);

    public static ScoreTable Run(
        ScoringContext context,
        string scorer,
        Func<ICausalLanguageModel, TextDataset, CellResult> evaluate,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        var grid = EvaluationGrid.From(context.Models, scorer);
        var values = grid.EmptyValues();
        var watch = Stopwatch.StartNew();
        var options = new ModelLoadOptions(context.Device, ScalarType.Float32, RequiresGrad: false);
        long samples = 0, tokens = 0;
        for (var row = 0; row < grid.Rows.Count; row++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var model = context.Runtime.Load(grid.Paths[row], options, cancellationToken);
            foreach (var (column, data) in grid.Cells[row])
            {
                var cell = evaluate(model, data);
                values[row][column] = cell.Value;
                samples += cell.Samples;
                tokens += cell.Tokens;
                LogCell(context.Logger, scorer, grid.Rows[row], grid.Columns[column], cell.Value, cell.Samples);
            }
        }
        watch.Stop();
        return new ScoreTable(scorer, ScorerKind.Evaluation, grid.Rows, grid.Columns, values)
        {
            Details = new Dictionary<string, double>
            {
                ["models"] = grid.Rows.Count,
                ["tasks"] = grid.Columns.Count,
                ["samples"] = samples,
                ["tokens"] = tokens,
                ["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 3),
            },
        };
    }

    [LoggerMessage(EventId = 8201, Level = LogLevel.Information, Message = "{Scorer}: {Model} on {Task} = {Value:G6} ({Samples} samples)")]
    private static partial void LogCell(ILogger logger, string scorer, string model, string task, double value, int samples);
}
