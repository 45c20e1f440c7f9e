# A VM is imported by its name; Drover finds the host it is defined on.
terraform import drover_vm.web1 web1
