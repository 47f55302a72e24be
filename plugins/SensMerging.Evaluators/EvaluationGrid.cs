using SensMerging.Abstractions;

namespace SensMerging.Evaluators;

/// <summary>
/// The models-by-tasks layout of an evaluation: rows are the distinct <see cref="ScoredModel.Name"/>s, columns the
/// distinct <see cref="TextDataset.Task"/>s of their data, both in order of first appearance. To score every model on
/// every task in one call, pass one <see cref="ScoredModel"/> per (model, task) pair with the same name (and path)
/// for the same model. Pairs not given are NaN in the table.
/// </summary>
public sealed class EvaluationGrid
{
    private EvaluationGrid(IReadOnlyList<string> rows, IReadOnlyList<string> paths, IReadOnlyList<string> columns, IReadOnlyList<IReadOnlyList<(int Column, TextDataset Data)>> cells)
    {
        Rows = rows;
        Paths = paths;
        Columns = columns;
        Cells = cells;
    }

    /// <summary>Model names.</summary>
    public IReadOnlyList<string> Rows { get; }

    /// <summary>The model folder of each row.</summary>
    public IReadOnlyList<string> Paths { get; }

    /// <summary>Task names.</summary>
    public IReadOnlyList<string> Columns { get; }

    /// <summary>For each row, the tasks to evaluate it on (column index and data).</summary>
    public IReadOnlyList<IReadOnlyList<(int Column, TextDataset Data)>> Cells { get; }

    /// <summary>Builds the grid; throws naming the problem for a model without data, a name used with two paths, or a repeated pair.</summary>
    public static EvaluationGrid From(IReadOnlyList<ScoredModel> models, string scorer)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (models.Count == 0)
        {
            throw new InvalidOperationException($"scorer '{scorer}' got no models to evaluate.");
        }
        var rows = new List<string>();
        var paths = new List<string>();
        var columns = new List<string>();
        var cells = new List<List<(int Column, TextDataset Data)>>();
        foreach (var model in models)
        {
            if (model.Data is null)
            {
                throw new InvalidOperationException($"model '{model.Name}' has no evaluation data: scorer '{scorer}' needs the task's held-out set as the model's data.");
            }
            if (model.Data.Samples.Count == 0)
            {
                throw new InvalidOperationException($"model '{model.Name}': the evaluation set of task '{model.Data.Task}' ('{model.Data.SourcePath}') is empty.");
            }
            var row = rows.IndexOf(model.Name);
            if (row < 0)
            {
                row = rows.Count;
                rows.Add(model.Name);
                paths.Add(model.ModelPath);
                cells.Add([]);
            }
            else if (!string.Equals(paths[row], model.ModelPath, StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"model name '{model.Name}' is given with two paths ('{paths[row]}' and '{model.ModelPath}'): use one name per model.");
            }
            var column = columns.IndexOf(model.Data.Task);
            if (column < 0)
            {
                column = columns.Count;
                columns.Add(model.Data.Task);
            }
            if (cells[row].Any(c => c.Column == column))
            {
                throw new InvalidOperationException($"model '{model.Name}' is given twice for task '{model.Data.Task}'.");
            }
            cells[row].Add((column, model.Data));
        }
        return new EvaluationGrid(rows, paths, columns, cells);
    }

    /// <summary>A rows x columns table filled with NaN.</summary>
    public double[][] EmptyValues() =>
        Rows.Select(_ => Enumerable.Repeat(double.NaN, Columns.Count).ToArray()).ToArray();
}
