"""The benchmarks behind ``python Code/bench.py {data,losses,train,gpu,export,pretrain}``, one module each."""
