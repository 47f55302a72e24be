using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;

namespace SensMerging.Runtime.Calibration;

/// <summary>What <see cref="CalibrationLoader.LoadAsync"/> read.</summary>
/// <param name="Dataset">The samples (at most the requested count).</param>
/// <param name="RequestedSamples">The <c>samples</c> setting (m).</param>
/// <param name="FileExhausted">True when the file had fewer than m samples, so all of them are used.</param>
public sealed record CalibrationLoadResult(TextDataset Dataset, int RequestedSamples, bool FileExhausted)
{
    public int SampleCount => Dataset.Samples.Count;
}

/// <summary>
/// Reads calibration or evaluation JSONL files: one JSON object per line with a <c>text</c> string, or a
/// <c>prompt</c> and a <c>response</c> string. Blank lines are skipped. The first m samples are taken.
/// </summary>
public sealed partial class CalibrationLoader
{
    private readonly ILogger<CalibrationLoader> _logger;

    public CalibrationLoader(ILogger<CalibrationLoader>? logger = null)
    {
        _logger = logger ?? NullLogger<CalibrationLoader>.Instance;
    }

    /// <param name="path">The JSONL file.</param>
    /// <param name="samples">m: how many samples to take from the start of the file.</param>
    /// <param name="maxLength">Tokens per sample after truncation (recorded in the dataset).</param>
    /// <param name="task">The task's name; the file name without extension when null.</param>
    public async Task<CalibrationLoadResult> LoadAsync(string path, int samples, int maxLength, string? task, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Calibration file not found: {path}", path);
        }
        var result = new List<TextSample>(Math.Min(samples, 4096));
        var lineNumber = 0;
        var exhausted = true;
        using (var reader = new StreamReader(path))
        {
            while (await reader.ReadLineAsync(cancellationToken) is { } line)
            {
                lineNumber++;
                if (string.IsNullOrWhiteSpace(line))
                {
                    continue;
                }
                if (result.Count == samples)
                {
                    exhausted = false;
                    break;
                }
                result.Add(ParseLine(line, path, lineNumber));
            }
        }
        if (result.Count == 0)
        {
            throw new InvalidDataException($"Calibration file {path} is empty: it has no JSON lines with samples.");
        }
        if (exhausted && result.Count < samples)
        {
            LogFewerSamples(_logger, path, result.Count, samples);
        }
        var dataset = new TextDataset(task ?? Path.GetFileNameWithoutExtension(path), path, result, maxLength);
        return new CalibrationLoadResult(dataset, samples, exhausted && result.Count < samples);
    }

    /// <summary><see cref="LoadAsync"/> returning only the dataset (a shortfall is logged as a warning).</summary>
    public async Task<TextDataset> LoadDatasetAsync(string path, int samples, int maxLength, string? task, CancellationToken cancellationToken) =>
        (await LoadAsync(path, samples, maxLength, task, cancellationToken)).Dataset;

    private static TextSample ParseLine(string line, string path, int lineNumber)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} line {lineNumber} is not valid JSON: {ex.Message}", ex);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path} line {lineNumber} is not a JSON object.");
            }
            var text = StringField(root, "text", path, lineNumber);
            var prompt = StringField(root, "prompt", path, lineNumber);
            var response = StringField(root, "response", path, lineNumber);
            if (text is not null)
            {
                return text.Length > 0
                    ? new TextSample(text)
                    : throw new InvalidDataException($"{path} line {lineNumber} has an empty \"text\".");
            }
            if (prompt is not null && response is not null)
            {
                return response.Length > 0
                    ? new TextSample(prompt, response)
                    : throw new InvalidDataException($"{path} line {lineNumber} has an empty \"response\".");
            }
            if (prompt is not null)
            {
                throw new InvalidDataException($"{path} line {lineNumber} has a \"prompt\" but no \"response\".");
            }
            throw new InvalidDataException($"{path} line {lineNumber} lacks a \"text\" field or \"prompt\" and \"response\" fields.");
        }
    }

    private static string? StringField(JsonElement root, string name, string path, int lineNumber)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : throw new InvalidDataException($"{path} line {lineNumber}: \"{name}\" must be a string.");
    }

    [LoggerMessage(EventId = 7001, Level = LogLevel.Warning,
        Message = "Calibration file {Path} has only {Available} samples; samples = {Requested} was requested, so all of them are used.")]
    private static partial void LogFewerSamples(ILogger logger, string path, int available, int requested);
}
