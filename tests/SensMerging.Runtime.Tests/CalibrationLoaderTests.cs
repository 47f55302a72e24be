using SensMerging.Runtime.Calibration;

namespace SensMerging.Runtime.Tests;

public sealed class CalibrationLoaderTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Reads_text_and_prompt_response_lines()
    {
        var path = Write("math.jsonl", """{"text": "plain sample"}""", "", """{"prompt": "1+1=", "response": "2", "extra": 5}""");
        var result = await new CalibrationLoader().LoadAsync(path, 100, 64, null, CancellationToken.None);
        Assert.Equal("math", result.Dataset.Task);
        Assert.Equal(path, result.Dataset.SourcePath);
        Assert.Equal(64, result.Dataset.MaxLength);
        Assert.Equal(2, result.SampleCount);
        Assert.True(result.FileExhausted);
        Assert.Equal("plain sample", result.Dataset.Samples[0].Prompt);
        Assert.Null(result.Dataset.Samples[0].Response);
        Assert.Equal(("1+1=", "2"), (result.Dataset.Samples[1].Prompt, result.Dataset.Samples[1].Response));
    }

    [Fact]
    public async Task Samples_setting_takes_the_first_m()
    {
        var path = Write("five.jsonl", Enumerable.Range(0, 5).Select(i => $$"""{"text": "s{{i}}"}""").ToArray());
        var loader = new CalibrationLoader();
        var three = await loader.LoadAsync(path, 3, 32, "t", CancellationToken.None);
        Assert.Equal(new[] { "s0", "s1", "s2" }, three.Dataset.Samples.Select(s => s.Prompt));
        Assert.False(three.FileExhausted);
        var exact = await loader.LoadAsync(path, 5, 32, "t", CancellationToken.None);
        Assert.False(exact.FileExhausted);
        var all = await loader.LoadAsync(path, 10, 32, "t", CancellationToken.None);
        Assert.Equal(5, all.SampleCount);
        Assert.True(all.FileExhausted);
        Assert.Equal(10, all.RequestedSamples);
    }

    [Fact]
    public async Task Empty_file_is_an_error_naming_the_file()
    {
        var path = Write("empty.jsonl", "", "   ");
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => new CalibrationLoader().LoadAsync(path, 10, 32, null, CancellationToken.None));
        Assert.Contains("empty", error.Message, StringComparison.Ordinal);
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Malformed_line_is_reported_with_its_number()
    {
        var path = Write("bad.jsonl", """{"text": "ok"}""", """{"text": "ok"}""", """{"text": oops}""");
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => new CalibrationLoader().LoadAsync(path, 10, 32, null, CancellationToken.None));
        Assert.Contains("line 3", error.Message, StringComparison.Ordinal);
        Assert.Contains("bad.jsonl", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Line_without_fields_is_reported()
    {
        var path = Write("fields.jsonl", """{"text": "ok"}""", """{"question": "?"}""");
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => new CalibrationLoader().LoadAsync(path, 10, 32, null, CancellationToken.None));
        Assert.Contains("line 2 lacks", error.Message, StringComparison.Ordinal);
        var promptOnly = Write("prompt.jsonl", """{"prompt": "x"}""");
        var error2 = await Assert.ThrowsAsync<InvalidDataException>(() => new CalibrationLoader().LoadAsync(promptOnly, 10, 32, null, CancellationToken.None));
        Assert.Contains("line 1", error2.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Missing_file_is_reported()
    {
        var path = Path.Combine(_temp.Path, "nope.jsonl");
        var error = await Assert.ThrowsAsync<FileNotFoundException>(() => new CalibrationLoader().LoadAsync(path, 10, 32, null, CancellationToken.None));
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
    }

    private string Write(string name, params string[] lines)
    {
        var path = Path.Combine(_temp.Path, name);
        File.WriteAllLines(path, lines);
        return path;
    }
}
